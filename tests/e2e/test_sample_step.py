"""``pipeline run sample`` on tiny real datasets in every format, and every bad input it must refuse."""

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from pipeline.data.images import load_file
from tests.conftest import write_cifar_batch

pytestmark = pytest.mark.e2e


@pytest.fixture
def data_config(write_config, jpeg_dir, cifar_dir, class_tree):
    """A smoke config whose three roles read the three test datasets (COCO, CIFAR-10, ImageNet-R formats)."""

    made = []

    def make(**datasets):
        made.append(datasets)
        plain = {"classes": None, "exclude": []}  # replace what the demo config sets
        base = {
            "photos": {"source": "coco", "root": str(jpeg_dir), **plain},
            "fashion": {"source": "cifar10", "root": str(cifar_dir), **plain},
            "clipart": {"source": "imagenet_r", "root": str(class_tree), **plain},
        }
        for name, values in datasets.items():
            base[name] = {**base[name], **values}
        return write_config(
            {
                "sample": {
                    "datasets": base,
                    "manifest_dir": "manifests",
                    "roles": {
                        "cae_train": {"dataset": "photos", "count": 10},
                        "aae_train": {"dataset": "fashion", "count": 20, "victim_count": 20},
                        "test": {"dataset": "clipart", "count": 12, "victim_count": 20},
                    },
                }
            },
            name=f"test{len(made)}",
        )

    return make


def _complete(root: Path) -> list[Path]:
    return sorted(root.glob("*/*/MANIFEST.json"))


def _one_line_error(result, *fragments):
    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_sample_writes_real_images_then_skips_then_rekeys(cli, data_config, tmp_path, class_tree):
    config = str(data_config())
    first = cli("run", "sample", "--config", config, check=True)
    assert "done: 3 task(s)" in first.stdout
    manifest = json.loads((tmp_path / "manifests" / "clipart.json").read_text())
    assert [len(manifest["splits"][s]) for s in ("test", "test_victim")] == [12, 20]
    assert not {e["id"] for e in manifest["splits"]["test"]} & {e["id"] for e in manifest["splits"]["test_victim"]}
    (artifact,) = [
        p.parent
        for p in _complete(tmp_path / "artifacts")
        if "clipart" in p.read_text() and '"task": "clipart"' in p.read_text()
    ]
    with h5py.File(artifact / "test" / "shard-00000.h5") as shard:
        images, labels, ids = shard["images"][:], shard["labels"][:], shard["ids"].asstr()[:]
    assert images.shape == (12, 3, 16, 16) and images.dtype == np.uint8
    first_entry = manifest["splits"]["test"][0]
    assert ids[0] == first_entry["id"] and labels[0] == first_entry["label"]
    assert np.array_equal(images[0], load_file(class_tree / first_entry["file"], 16))

    again = cli("run", "sample", "--config", config, check=True)
    assert "up to date, skipped: sample (3)" in again.stdout and "nothing to do" in again.stdout

    plan = cli("plan", "sample", "--config", config, "--set", "sample.seed=2", check=True)
    assert plan.stdout.count("pending") == 3


def test_a_given_manifest_pins_the_images_and_checksums(cli, data_config, tmp_path, class_tree):
    cli("run", "sample", "--config", str(data_config()), check=True)
    pinned = tmp_path / "pinned.json"
    pinned.write_text((tmp_path / "manifests" / "clipart.json").read_text())
    config = str(data_config(clipart={"manifest": str(pinned)}))
    cli("run", "sample", "--config", config, "--set", "sample.seed=5", check=True)
    entry = json.loads(pinned.read_text())["splits"]["test"][3]
    (class_tree / entry["file"]).write_bytes((class_tree / entry["file"]).read_bytes() + b"x")
    before = _complete(tmp_path / "artifacts")
    result = cli("run", "sample", "--config", config, "--set", "sample.seed=6")
    _one_line_error(result, "checksum mismatch", entry["file"])
    assert _complete(tmp_path / "artifacts") == before


def test_bad_dataset_inputs(cli, data_config, tmp_path, jpeg_dir, cifar_dir):
    """Each case on a fresh artifact root: nothing of the failing dataset may be published."""
    cases = [
        (data_config(photos={"root": str(tmp_path / "missing")}), ["does not exist", "missing"]),
        (data_config(photos={"root": str(tmp_path / "empty")}), ["has 0 images", "cae_train 10"]),
        (data_config(fashion={"classes": ["cat"]}), ["has 6 images, the roles need 40"]),
    ]
    (tmp_path / "empty").mkdir()
    jpeg = sorted(jpeg_dir.iterdir())
    bad_jpeg = tmp_path / "bad_jpeg"
    bad_jpeg.mkdir()
    for i in range(10):  # all ten are sampled, so the truncated one is met
        (bad_jpeg / f"img{i}.jpg").write_bytes(jpeg[i].read_bytes()[:300] if i == 5 else jpeg[i].read_bytes())
    cases.append((data_config(photos={"root": str(bad_jpeg)}), ["cannot decode image", "img5.jpg"]))
    cases.append((data_config(), ["data_batch_2 has no key 'data'"]))
    for i, (config, fragments) in enumerate(cases):
        if i == len(cases) - 1:
            write_cifar_batch(cifar_dir / "data_batch_2", 4, seed=2, keys=("labels",))
        root = tmp_path / f"artifacts{i}"
        _one_line_error(cli("run", "sample", "--config", str(config), artifacts=root), *fragments)
        published = [json.loads(p.read_text())["task"] for p in _complete(root)]
        assert len(published) < 3 and not list(root.glob("sample/.tmp-*")), published


def test_manifest_pointing_outside_the_root(cli, data_config, tmp_path):
    cli("run", "sample", "--config", str(data_config()), check=True)
    manifest = json.loads((tmp_path / "manifests" / "clipart.json").read_text())
    manifest["splits"]["test"][0]["file"] = "../coco/000000000001.jpg"
    evil = tmp_path / "evil.json"
    evil.write_text(json.dumps(manifest))
    before = _complete(tmp_path / "artifacts")
    _one_line_error(
        cli("run", "sample", "--config", str(data_config(clipart={"manifest": str(evil)}))),
        "'../coco/000000000001.jpg' points outside the dataset root",
    )
    assert _complete(tmp_path / "artifacts") == before


def test_bad_config_inputs(cli, tmp_path):
    _one_line_error(
        cli("run", "sample", "--config", "smoke", "--set", "sample.shard_sise=3"),
        "unknown key 'sample.shard_sise'",
        "shard_size",
    )
    _one_line_error(
        cli("run", "sample", "--config", "smoke", "--set", "sample.image_size=big"),
        "'sample.image_size'",
        "'big'",
        "int",
    )
    assert not (tmp_path / "artifacts").exists() or _complete(tmp_path / "artifacts") == []
