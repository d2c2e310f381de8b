"""Every source format, read from tiny real files, and the sampling rules."""

import json
import pickle

import numpy as np
import pytest

from pipeline.data.images import load_file
from pipeline.data.sampling import choose, file_checksums, from_manifest, make_manifest
from pipeline.data.shards import ShardSet, read_shard, shard_length, write_shard
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
    manifest = make_manifest("r", "imagenet_r", 0, listing.classes, chosen, file_checksums(class_tree, chosen["test"]))
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
        write_shard(tmp_path / f"s{i}.h5", {"images": images[5 * i : 5 * i + 5], "ids": np.array(list("abcde"))})
    shards = ShardSet([tmp_path / "s0.h5", tmp_path / "s1.h5"], [5, 5])
    part = shards.read(3, 8, ["images", "ids"])
    assert np.array_equal(part["images"], images[3:8]) and list(part["ids"]) == list("deabc")
    (tmp_path / "s1.h5").write_bytes((tmp_path / "s1.h5").read_bytes()[:300])
    with pytest.raises(PipelineError, match="cannot read HDF5 shard .*s1.h5"):
        read_shard(tmp_path / "s1.h5")


# --- hostile inputs: each is one PipelineError naming the file and what is wrong -----------------


def _cifar_with_labels(path, labels, count=4):
    with open(path, "wb") as handle:
        pickle.dump({b"data": np.zeros((count, 3072), np.uint8), b"labels": labels}, handle, protocol=2)


@pytest.mark.parametrize(
    "labels, fragment",
    [
        (["cat", "dog", "cat", "dog"], "'labels' must be 4 integers, one per image, not <U3 (4,)"),
        ([[1, 2], [3], 4, 5], "'labels' must be 4 integers"),
        ([1, 2, 3], "'labels' must be 4 integers, one per image, not int64 (3,)"),
        ({"a": 1}, "'labels' must be 4 integers, one per image, not dict"),
        ([0, 1, 2, 10], "'labels' must lie in 0-9, found 0-10"),
        ([0, -1, 2, 3], "found -1-3"),
        ([True, False, True, True], "not bool (4,)"),
        ([0.5, 1, 2, 3], "not float64 (4,)"),
        ([2**70, 1, 2, 3], "not object (4,)"),
    ],
)
def test_malformed_cifar_labels_fail_naming_the_batch(cifar_dir, labels, fragment):
    _cifar_with_labels(cifar_dir / "data_batch_2", labels)
    with pytest.raises(PipelineError, match="CIFAR batch .*data_batch_2: ") as err:
        SOURCES["cifar10"].list(cifar_dir, None)
    assert fragment in str(err.value)


def test_idx_header_declaring_more_than_the_file_holds(tmp_path):
    from pipeline.data.sources import read_idx

    (tmp_path / "short").write_bytes(bytes([0, 0, 8, 4, 0, 0]))
    with pytest.raises(PipelineError, match="truncated inside its header"):
        read_idx(tmp_path / "short")
    (tmp_path / "huge").write_bytes(bytes([0, 0, 8, 4]) + b"\xff\xff\xff\xff" * 4 + bytes(16))
    with pytest.raises(PipelineError, match=r"16 values for shape \(4294967295,"):
        read_idx(tmp_path / "huge")


def _manifest(class_tree):
    listing = SOURCES["imagenet_r"].list(class_tree, None)
    chosen = choose(listing, [("test", 3)], seed=0, what="d")
    return make_manifest("r", "imagenet_r", 0, listing.classes, chosen, file_checksums(class_tree, chosen["test"]))


@pytest.mark.parametrize(
    "damage, fragment",
    [
        (lambda m: [m], "the top level must be an object, not ["),
        (lambda m: {**m, "format": 2}, "'format' must be 1, not 2"),
        (lambda m: {**m, "classes": 3}, "'classes' must be null or a list of class names, not 3"),
        (lambda m: {**m, "files": ["a"]}, "'files' must be an object of file -> sha256"),
        (lambda m: {**m, "files": {k: 7 for k in m["files"]}}, "must be a sha256 (64 hex digits), not 7"),
        (lambda m: {**m, "splits": []}, "'splits' must be an object of split -> entries, not []"),
        (lambda m: {**m, "splits": {"test": {"0": 1}}}, "'splits.test' must be a list of entries"),
        (lambda m: {**m, "splits": {"test": [5]}}, "'splits.test[0]' must be an object with id, file and label, not 5"),
        (
            lambda m: {**m, "splits": {"test": [{**m["splits"]["test"][0], "label": "cat"}]}},
            "'splits.test[0].label' must be an integer, not \"cat\"",
        ),
        (
            lambda m: {**m, "splits": {"test": [{"id": "x", "label": 1}]}},
            "'splits.test[0].file' must be a path relative to the dataset root, not null",
        ),
        (
            lambda m: {**m, "splits": {"test": [{**m["splits"]["test"][0], "id": ["x"] * 30}]}},
            '\'splits.test[0].id\' must be text, not ["x", "x", "x", "x", "x", "x", "x", "...',
        ),
    ],
)
def test_malformed_manifests_fail_naming_the_key(class_tree, tmp_path, damage, fragment):
    from pipeline.data.sampling import read_manifest

    path = tmp_path / "m.json"
    path.write_text(json.dumps(damage(_manifest(class_tree))))
    with pytest.raises(PipelineError) as err:
        read_manifest(path)
    assert str(err.value).startswith(f"manifest {path}") and fragment in str(err.value), str(err.value)


def _hostile_shards(folder):
    """HDF5 files whose 'images' are not data stored in the file, or far larger than memory."""
    import h5py

    folder.mkdir()
    write_shard(folder / "plain.h5", {"images": np.zeros((2, 3, 4, 4), np.uint8)})
    with h5py.File(folder / "external-storage.h5", "w") as handle:
        handle.create_dataset("images", shape=(16,), dtype=np.uint8, external=[("/etc/passwd", 0, 16)])
    with h5py.File(folder / "external-link.h5", "w") as handle:
        handle["images"] = h5py.ExternalLink(str(folder / "plain.h5"), "images")
    with h5py.File(folder / "soft-link.h5", "w") as handle:
        handle["data"] = np.zeros((2, 3, 4, 4), np.uint8)
        handle["images"] = h5py.SoftLink("/data")
    layout = h5py.VirtualLayout(shape=(2, 3, 4, 4), dtype=np.uint8)
    layout[:] = h5py.VirtualSource(str(folder / "plain.h5"), "images", shape=(2, 3, 4, 4))
    with h5py.File(folder / "virtual.h5", "w") as handle:
        handle.create_virtual_dataset("images", layout)
    with h5py.File(folder / "huge.h5", "w") as handle:  # declared, never written: the file stays small
        handle.create_dataset(
            "images", shape=(100_000, 3, 256, 256), dtype=np.float32, chunks=(1, 3, 256, 256), compression="gzip"
        )
    return folder


@pytest.mark.parametrize(
    "name, fragment",
    [
        ("external-storage", "keeps its data outside the shard"),
        ("external-link", "'images' is a link (ExternalLink), not data stored in the shard"),
        ("soft-link", "'images' is a link (SoftLink)"),
        ("virtual", "keeps its data outside the shard"),
        ("huge", "declares shape (100000, 3, 256, 256) of float32, 73.2 GiB to read, more than this machine's memory"),
    ],
)
def test_hostile_hdf5_shards_fail_naming_the_file(tmp_path, name, fragment):
    folder = _hostile_shards(tmp_path / "shards")
    path = folder / f"{name}.h5"
    with pytest.raises(PipelineError) as err:
        read_shard(path, ["images"])
    assert str(err.value).startswith(f"shard {path}: ") and fragment in str(err.value), str(err.value)
    if name != "huge":
        with pytest.raises(PipelineError, match=f"shard {path}: "):
            shard_length(path)
    assert read_shard(folder / "huge.h5", ["images"], slice(0, 1))["images"].shape == (1, 3, 256, 256)
