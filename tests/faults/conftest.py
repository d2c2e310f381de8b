"""The fault tier: one undisturbed reference run per session, and the summary table of faults
(``_summary.py``: each test records the faults it injected with ``fault_log``)."""

from __future__ import annotations

import pytest

from tests.faults._harness import Reference, close_server, make_reference
from tests.faults._summary import fault_log, pytest_runtest_makereport, pytest_terminal_summary  # noqa: F401


@pytest.fixture(scope="session")
def reference(tmp_path_factory) -> Reference:
    """One undisturbed ``pipeline run all`` (smoke, narrowed: see FAULTS_CONFIG), shared read-only:
    every fault test copies its root and must end with the same sha256 for every manifest file."""
    return make_reference(tmp_path_factory.mktemp("reference"))


@pytest.fixture(scope="session", autouse=True)
def _fork_server():
    """Pipeline commands are forked from one preloaded process (see _forkserver.py); stop it at the end."""
    yield
    close_server()
