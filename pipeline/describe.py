"""``pipeline describe models``: the CAE and the model of every trained method a config builds."""

from __future__ import annotations

from dataclasses import asdict

from pipeline.config import Config
from pipeline.methods import METHODS


def describe_models(config: Config) -> str:
    """Layers, weight shapes and parameter counts of every recovery model, for this config's images."""
    from pipeline.models import build_model, describe

    shape = (3, config.sample.image_size, config.sample.image_size)
    trained = [m for m in config.evaluate.methods if METHODS[m].training]
    sections = {"cae": config.cae.arch, **{name: config.aae.arch for name in trained}}
    blocks = [f"== {name} ==\n{describe(build_model(shape, asdict(arch)))}" for name, arch in sections.items()]
    return "\n\n".join(blocks)
