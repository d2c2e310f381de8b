"""Every source format, read from tiny real files, and the sampling rules."""

import json
import pickle

import numpy as np
import pytest

from pipeline.data.images import load_file
from pipeline.data.sampling import choose, from_manifest, make_manifest, file_checksums
from pipeline.data.shards import ShardSet, read_shard, write_shard
from pipeline.data.sources import SOURCES
from pipeline.errors import PipelineError
from tests.conftest import write_cifar_batch

pytestmark = pytest.mark.unit


def test_coco_directory(jpeg_dir):
    listing = SOURCES["coco"].list(jpeg_dir, None)
    assert len(listing.items) == 24 and listing.classes is None and listing.items[0].label == -1
    images = list(SOURCES["coco"].load(jpeg_dir, listing.items[:3], 16))
    assert images[0].shape == (3, 16, 16) and images[0].dtype == np.uint8 and images[0].std() > 5


def test_class_folder_tree(class_tree):
    listing = SOURCES["imagenet_r"].list(class_tree, None)
    assert listing.classes == ["n01443537", "n01484850", "n01494475"]
    assert [sum(it.label == c for it in listing.items) for c in range(3)] == [12, 12, 12]
    subset = SOURCES["image_folder"].list(class_tree, ["n01494475"])
    assert len(subset.items) == 12 and {it.label for it in subset.items} == {0}
    with pytest.raises(PipelineError, match="no class folder"):
        SOURCES["image_folder"].list(class_tree, ["n0000"])


def test_links_to_one_file_count_once(class_tree):
    (class_tree / "n01443537" / "link.png").symlink_to(class_tree / "n01484850" / "art_1.png")
    assert len(SOURCES["imagenet_r"].list(class_tree, None).items) == 36


def test_cifar_batches_match_the_pickled_pixels(cifar_dir):
    listing = SOURCES["cifar10"].list(cifar_dir, None)
    assert len(listing.items) == 60 and listing.items[0].id == "data_batch_1:00000"
    with open(cifar_dir / "data_batch_1", "rb") as handle:
        raw = pickle.load(handle, encoding="bytes")[b"data"]
    (image,) = SOURCES["cifar10"].load(cifar_dir, listing.items[5:6], 32)
    assert np.array_equal(image.reshape(-1), raw[5])


def test_cifar_with_wrong_keys_fails_naming_file_and_key(cifar_dir):
    write_cifar_batch(cifar_dir / "data_batch_2", 5, seed=1, keys=("data",))
    with pytest.raises(PipelineError, match=r"data_batch_2 has no key 'labels'"):
        SOURCES["cifar10"].list(cifar_dir, None)


def test_cifar_pickle_with_a_payload_is_refused(cifar_dir):
    class Payload:
        def __reduce__(self):
            return (print, ("owned",))

    with open(cifar_dir / "data_batch_3", "wb") as handle:
        pickle.dump({b"data": Payload(), b"labels": []}, handle)
    with pytest.raises(PipelineError, match="refusing to load builtins.print"):
        SOURCES["cifar10"].list(cifar_dir, None)


def test_idx_files(idx_dir):
    listing = SOURCES["fashion_mnist"].list(idx_dir, None)
    assert len(listing.items) == 40 and listing.items[0].label == 0
    (image,) = SOURCES["fashion_mnist"].load(idx_dir, listing.items[1:2], 32)
    assert image.shape == (3, 32, 32) and (image[0] == image[2]).all()


def test_photo_crops_of_the_packaged_photos():
    source = SOURCES["photo_crops"]
    listing = source.list(source.default_root(), None)
    assert len(listing.items) > 2000
    (image,) = source.load(source.default_root(), listing.items[:1], 32)
    assert image.shape == (3, 32, 32) and image.std() > 1


def test_corrupt_truncated_and_huge_images_fail_naming_the_file(tmp_path, jpeg_dir):
    truncated = tmp_path / "t.jpg"
    truncated.write_bytes((jpeg_dir / "000000000001.jpg").read_bytes()[:200])
    with pytest.raises(PipelineError, match="cannot decode image .*t.jpg"):
        load_file(truncated, 16)
    empty = tmp_path / "zero.png"
    empty.write_bytes(b"")
    with pytest.raises(PipelineError, match="zero.png"):
        load_file(empty, 16)
    from PIL import Image

    huge = tmp_path / "huge.png"
    Image.new("1", (10_000, 10_000)).save(huge)
    with pytest.raises(PipelineError, match=r"huge.png is 10000x10000, over the limit"):
        load_file(huge, 16)


def test_alpha_is_flattened_on_white(tmp_path):
    from PIL import Image

    path = tmp_path / "clear.png"
    Image.new("RGBA", (20, 20), (255, 0, 0, 0)).save(path)
    assert (load_file(path, 8) == 255).all()


def test_splits_are_seeded_and_disjoint(class_tree):
    listing = SOURCES["imagenet_r"].list(class_tree, None)
    chosen = choose(listing, [("test", 10), ("test_victim", 20)], seed=0, what="d")
    ids = [it.id for items in chosen.values() for it in items]
    assert len(ids) == len(set(ids)) == 30
    assert chosen == choose(listing, [("test", 10), ("test_victim", 20)], seed=0, what="d")
    assert chosen != choose(listing, [("test", 10), ("test_victim", 20)], seed=1, what="d")
    with pytest.raises(PipelineError, match="has 36 images, the roles need 40 \\(test 30 \\+ test_victim 10\\)"):
        choose(listing, [("test", 30), ("test_victim", 10)], seed=0, what="d")


def test_manifest_round_trip_and_tampering(class_tree, tmp_path):
    listing = SOURCES["imagenet_r"].list(class_tree, None)
    chosen = choose(listing, [("test", 5)], seed=0, what="d")
    manifest = make_manifest("r", "imagenet_r", 0, listing.classes, chosen,
                             file_checksums(class_tree, chosen["test"]))
    path = tmp_path / "m.json"
    assert from_manifest(manifest, path, class_tree, [("test", 5)]) == chosen
    victim = class_tree / chosen["test"][0].file
    victim.write_bytes(victim.read_bytes() + b"\0")
    with pytest.raises(PipelineError, match=f"checksum mismatch for .*{victim.name}"):
        from_manifest(manifest, path, class_tree, [("test", 5)])
    evil = json.loads(json.dumps(manifest))
    evil["splits"]["test"][0]["file"] = "../../etc/passwd"
    with pytest.raises(PipelineError, match="'../../etc/passwd' points outside the dataset root"):
        from_manifest(evil, path, class_tree, [("test", 5)])
    evil["splits"]["test"][0]["file"] = "/etc/passwd"
    with pytest.raises(PipelineError, match="points outside the dataset root"):
        from_manifest(evil, path, class_tree, [("test", 5)])


def test_shards_round_trip_and_span(tmp_path):
    images = np.arange(10 * 3 * 4 * 4, dtype=np.uint8).reshape(10, 3, 4, 4)
    for i in range(2):
        write_shard(tmp_path / f"s{i}.h5", {"images": images[5 * i:5 * i + 5], "ids": np.array(list("abcde"))})
    shards = ShardSet([tmp_path / "s0.h5", tmp_path / "s1.h5"], [5, 5])
    part = shards.read(3, 8, ["images", "ids"])
    assert np.array_equal(part["images"], images[3:8]) and list(part["ids"]) == list("deabc")
    (tmp_path / "s1.h5").write_bytes((tmp_path / "s1.h5").read_bytes()[:300])
    with pytest.raises(PipelineError, match="cannot read HDF5 shard .*s1.h5"):
        read_shard(tmp_path / "s1.h5")
