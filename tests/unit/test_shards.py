"""Adversarial shards as the attack step writes them: zstd through hdf5plugin, batch by batch in a
background thread; the same arrays give the same bytes, in any batches and in any process, and take
no more than a fifth more space than gzip's."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.data.shards import CODECS, ShardWriter, read_shard, write_shard

pytestmark = pytest.mark.unit

CHILD = """
import sys
from pathlib import Path
import numpy as np
from pipeline.data.shards import write_shard
arrays = dict(np.load(sys.argv[1]))
write_shard(Path(sys.argv[2]), arrays, {"attack": "x"}, codec="zstd")
"""


@pytest.fixture(scope="module")
def attacked(photo_victim) -> dict[str, np.ndarray]:
    """Real adversarial images of the photo victim's 64 held-out crops, as the step stores them: FGSM
    and BIM (pixels on a few levels) and CW (continuous), float32 and float16."""
    import torch

    from pipeline.attacks.catalog import build_attack

    model, images, labels = photo_victim
    out = {}
    for name, params in (("fgsm", {"eps": 0.03}), ("bim", {}), ("cw", {"steps": 5})):
        torch.manual_seed(0)
        adv = build_attack(name, model, params)(images, labels).detach().clamp(0, 1)
        out[name], out[f"{name}-f16"] = adv.numpy(), adv.half().numpy()
    return out


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _shard(images: np.ndarray) -> dict[str, np.ndarray]:
    return {"images": images, "rows": np.arange(len(images)), "success": np.arange(len(images)) % 3 == 0}


def test_the_same_arrays_give_the_same_bytes_in_any_batches_and_processes(attacked, tmp_path):
    for name, images in attacked.items():
        arrays = _shard(images)
        write_shard(tmp_path / "whole.h5", arrays, {"attack": "x"}, codec="zstd")
        for batch in (64, 25, 7):
            with ShardWriter(tmp_path / f"b{batch}.h5", len(images), "zstd") as shard:
                for lo in range(0, len(images), batch):
                    shard.append("images", images[lo : lo + batch])
                shard.finish({k: v for k, v in arrays.items() if k != "images"}, {"attack": "x"})
            assert _sha(tmp_path / f"b{batch}.h5") == _sha(tmp_path / "whole.h5"), (name, batch)
        np.savez(tmp_path / "arrays.npz", **arrays)
        env = {**os.environ, "PYTHONHASHSEED": "123", "OMP_NUM_THREADS": "2"}
        subprocess.run(
            [sys.executable, "-c", CHILD, str(tmp_path / "arrays.npz"), str(tmp_path / "child.h5")],
            check=True,
            env=env,
            timeout=120,
        )
        assert _sha(tmp_path / "child.h5") == _sha(tmp_path / "whole.h5"), name
        back = read_shard(tmp_path / "whole.h5")
        assert back["images"].dtype == images.dtype and np.array_equal(back["images"], images)
        assert np.array_equal(back["success"], arrays["success"])


def test_zstd_shards_are_at_most_a_fifth_larger_than_gzip(attacked, tmp_path):
    sizes = {}
    for name, images in attacked.items():
        for codec in CODECS:
            path = tmp_path / f"{name}-{codec}.h5"
            write_shard(path, _shard(images), codec=codec)
            sizes[name, codec] = path.stat().st_size
    ratios = {name: sizes[name, "zstd"] / sizes[name, "gzip"] for name in attacked}
    assert max(ratios.values()) <= 1.2, ratios
    assert ratios["fgsm"] < 0.9 and ratios["bim"] < 0.9, ratios  # few pixel levels: no byte shuffle wins


def test_a_shard_given_the_wrong_number_of_rows_is_refused(tmp_path):
    images = np.zeros((10, 3, 4, 4), np.float32)
    with ShardWriter(tmp_path / "over.h5", 8, "zstd") as shard, pytest.raises(ValueError, match="10 rows appended"):
        shard.append("images", images)
    with ShardWriter(tmp_path / "short.h5", 12, "zstd") as shard:
        shard.append("images", images)
        with pytest.raises(ValueError, match="fewer rows"):
            shard.finish({})
