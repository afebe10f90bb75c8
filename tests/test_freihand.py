"""FreiHANDDataset on a tiny generated FreiHAND-format folder: items, crops, validation split, annotation caches,
and clear errors for every kind of bad input."""

from __future__ import annotations

import os
import pickle
import shutil

import cv2
import numpy as np
import orjson
import pytest
import torch

from handmesh.data.annotations import cache_path, load_annotation
from handmesh.data.freihand import FreiHANDDataset, mask_path, validation_ids
from handmesh.data.transforms import Augmentation
from handmesh.errors import DataError

from conftest import TINY_EVAL as N_EVAL, TINY_TRAIN as N_TRAIN


@pytest.fixture
def copy(tiny_root, tmp_path):
    """A private copy to damage."""
    target = tmp_path / "FreiHAND_pub_v2"
    shutil.copytree(tiny_root, target, ignore=shutil.ignore_patterns("*.npy"))
    return target


def _json(root, name):
    return np.asarray(orjson.loads((root / name).read_bytes()), dtype=np.float64)


def test_items_follow_the_contract(tiny_root):
    dataset = FreiHANDDataset(tiny_root, "training", input_size=128, val_fraction=0.0, progress=False)
    assert len(dataset) == 4 * N_TRAIN
    item = dataset[N_TRAIN + 2]  # version 1 of sample 2
    shapes = {"image": (3, 128, 128), "K": (3, 3), "keypoints_3d": (21, 3), "keypoints_2d": (21, 2),
              "vertices": (778, 3), "mano_pose": (48,), "mano_shape": (10,)}
    scalars = {"has_mano": True, "sample_id": 2, "version": 1, "index": N_TRAIN + 2}
    assert set(item) == set(shapes) | set(scalars)
    assert {key: tuple(item[key].shape) for key in shapes} == shapes
    assert {key: item[key] for key in scalars} == scalars
    assert all(type(item[key]) is type(value) for key, value in scalars.items())  # bool stays bool, ints stay ints
    assert item["image"].dtype == torch.uint8 and item["image"].is_contiguous()
    assert all(item[key].dtype == torch.float32 for key in shapes if key != "image")
    np.testing.assert_allclose(item["keypoints_3d"].numpy(), _json(tiny_root, "training_xyz.json")[2], atol=1e-6)
    np.testing.assert_allclose(item["mano_pose"].numpy(), _json(tiny_root, "training_mano.json")[2, 0, :48], atol=1e-6)
    evaluation = FreiHANDDataset(tiny_root, "evaluation", progress=False)
    assert len(evaluation) == N_EVAL and set(evaluation[0]) == set(item)
    assert [int(evaluation[i]["index"]) for i in range(N_EVAL)] == list(range(N_EVAL))


def test_plain_crop_is_the_resized_image_with_scaled_intrinsics(tiny_root):
    dataset = FreiHANDDataset(tiny_root, "training", input_size=112, val_fraction=0.0, progress=False)
    item = dataset[3]
    K = _json(tiny_root, "training_K.json")[3]
    expected_K = np.array([[0.5, 0, -0.25], [0, 0.5, -0.25], [0, 0, 1]]) @ K  # pixel centres: u' = (u + 0.5) / 2 - 0.5
    np.testing.assert_allclose(item["K"].numpy(), expected_K, rtol=1e-6)
    uv = _json(tiny_root, "training_xyz.json")[3] @ K.T
    uv = (uv[:, :2] / uv[:, 2:] + 0.5) / 2 - 0.5
    assert np.abs(item["keypoints_2d"].numpy() - uv).max() < 0.5
    source = cv2.cvtColor(cv2.imread(str(tiny_root / "training" / "rgb" / "00000003.jpg")), cv2.COLOR_BGR2RGB)
    resized = cv2.resize(source, (112, 112), interpolation=cv2.INTER_LINEAR).astype(np.float64)
    assert np.abs(item["image"].permute(1, 2, 0).numpy() - resized).mean() < 0.02 * 255


def test_masks_cover_the_projected_keypoints(tiny_root):
    dataset = FreiHANDDataset(tiny_root, "training", val_fraction=0.0, progress=False)
    for sample in range(N_TRAIN):
        item = dataset[sample]
        mask = cv2.imread(str(mask_path(tiny_root, sample)), cv2.IMREAD_GRAYSCALE) > 127
        mask = cv2.dilate(mask.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
        pixels = np.round(item["keypoints_2d"].numpy()).astype(int)
        assert mask[pixels[:, 1], pixels[:, 0]].all()


def test_validation_holds_out_whole_samples(tiny_root):
    train = FreiHANDDataset(tiny_root, "training", subset="train", val_fraction=0.34, progress=False)
    val = FreiHANDDataset(tiny_root, "training", subset="val", val_fraction=0.34, progress=False)
    train_ids = {int(i) % N_TRAIN for i in train.indices}
    val_ids = {int(i) % N_TRAIN for i in val.indices}
    assert val_ids and not train_ids & val_ids and train_ids | val_ids == set(range(N_TRAIN))
    assert len(val) == 4 * len(val_ids)  # all four versions of a held-out sample are held out
    assert {int(val[k]["sample_id"]) for k in range(len(val))} == val_ids
    np.testing.assert_array_equal(validation_ids(32560, 0.05), validation_ids(32560, 0.05))  # deterministic
    assert len(validation_ids(32560, 0.05)) == 1628
    assert set(validation_ids(32560, 0.05)) <= set(validation_ids(32560, 0.1))
    with pytest.raises(DataError, match="val_fraction"):
        validation_ids(10, 1.5)


def test_cache_is_memory_mapped_and_rebuilt_when_the_json_changes(copy):
    json_path = copy / "training_xyz.json"
    first = load_annotation(json_path, (21, 3), progress=False)
    assert isinstance(first, np.memmap) and not first.flags.writeable
    assert cache_path(json_path).parent == copy and cache_path(json_path).is_file()
    xyz = _json(copy, "training_xyz.json")
    xyz[0, 0, 0] = 1.25
    json_path.write_bytes(orjson.dumps(xyz, option=orjson.OPT_SERIALIZE_NUMPY))
    os.utime(json_path, ns=(1, 2_000_000_000_000_000_000))  # a new size or mtime means a new cache
    second = load_annotation(json_path, (21, 3), progress=False)
    assert second[0, 0, 0] == np.float32(1.25)
    assert len(list(copy.glob("training_xyz.json.*.npy"))) == 1  # the stale cache is gone


def test_cache_goes_to_cache_dir_when_the_dataset_is_read_only(copy, tmp_path):
    if os.geteuid() == 0:
        cache = tmp_path / "cache"  # root ignores permissions: check the explicit cache_dir route instead
        load_annotation(copy / "training_K.json", (3, 3), cache_dir=cache, progress=False)
        assert len(list(cache.glob("*-training_K.json.*.npy"))) == 1
        return
    copy.chmod(0o555)
    try:
        cache = tmp_path / "cache"
        load_annotation(copy / "training_K.json", (3, 3), cache_dir=cache, progress=False)
        assert not list(copy.glob("*.npy")) and len(list(cache.glob("*.npy"))) == 1
    finally:
        copy.chmod(0o755)


def test_pickled_dataset_does_not_carry_the_arrays(tiny_root):
    dataset = FreiHANDDataset(tiny_root, "training", progress=False)
    restored = pickle.loads(pickle.dumps(dataset))
    assert len(pickle.dumps(dataset)) < 20_000  # the memory maps are reopened, not copied
    np.testing.assert_array_equal(restored[1]["vertices"].numpy(), dataset[1]["vertices"].numpy())


def test_missing_folder_json_or_split(tmp_path, copy):
    with pytest.raises(DataError, match="no dataset folder"):
        FreiHANDDataset(tmp_path / "nowhere", progress=False)
    with pytest.raises(DataError, match="no image folder"):
        FreiHANDDataset(copy.parent, progress=False)  # the parent of the dataset folder
    (copy / "training_verts.json").unlink()
    with pytest.raises(DataError, match="lacks training_verts.json"):
        FreiHANDDataset(copy, progress=False)
    with pytest.raises(DataError, match="subset"):
        FreiHANDDataset(copy, "evaluation", subset="val", progress=False)


def test_counts_that_disagree(copy):
    xyz = _json(copy, "training_xyz.json")[:-1]
    (copy / "training_xyz.json").write_bytes(orjson.dumps(xyz, option=orjson.OPT_SERIALIZE_NUMPY))
    with pytest.raises(DataError, match="disagree on the number of samples"):
        FreiHANDDataset(copy, progress=False)


def test_image_count_that_is_not_a_multiple(copy):
    (copy / "training" / "rgb" / f"{4 * N_TRAIN - 1:08d}.jpg").unlink()
    with pytest.raises(DataError, match=f"holds {4 * N_TRAIN - 1} JPEGs"):
        FreiHANDDataset(copy, progress=False)


def test_entries_of_the_wrong_shape(copy):
    xyz = np.ascontiguousarray(_json(copy, "training_xyz.json")[:, :20])  # 20 keypoints instead of 21
    (copy / "training_xyz.json").write_bytes(orjson.dumps(xyz, option=orjson.OPT_SERIALIZE_NUMPY))
    with pytest.raises(DataError, match=r"entries have shape \(20, 3\), expected \(21, 3\)"):
        FreiHANDDataset(copy, progress=False)
    (copy / "training_K.json").write_bytes(b'{"K": 1}')
    with pytest.raises(DataError, match="does not start with"):
        load_annotation(copy / "training_K.json", (3, 3), progress=False)
    (copy / "training_K.json").write_bytes(b"[[[1, 2, 3], [4, 5, 6], [7, 8, 9]], [[1, 2")
    with pytest.raises(DataError, match="truncated"):
        load_annotation(copy / "training_K.json", (3, 3), progress=False)


def test_unreadable_jpeg_raises_with_its_path_or_is_skipped(copy):
    broken = copy / "training" / "rgb" / "00000002.jpg"
    broken.write_bytes(b"not a jpeg at all")
    dataset = FreiHANDDataset(copy, val_fraction=0.0, progress=False)
    with pytest.raises(DataError, match=str(broken)):
        dataset[2]
    skipping = FreiHANDDataset(copy, val_fraction=0.0, on_bad_image="skip", progress=False)
    with pytest.warns(UserWarning, match="00000002.jpg"):
        item = skipping[2]
    assert int(item["index"]) == 3 and skipping.skipped == [str(broken)]
    with pytest.raises(DataError, match="on_bad_image"):
        FreiHANDDataset(copy, on_bad_image="ignore", progress=False)


def test_without_labels_only_images_and_K_are_read(copy, tiny_root):
    for name in ("evaluation_xyz.json", "evaluation_verts.json", "evaluation_mano.json"):
        (copy / name).write_bytes(b"[[[broken")  # ground truth, present or not, is never read
    bare = FreiHANDDataset(copy, "evaluation", input_size=64, labels=False, progress=False)
    full = FreiHANDDataset(tiny_root, "evaluation", input_size=64, progress=False)
    assert set(bare.arrays) == {"K"} and len(bare) == len(full) == N_EVAL
    for position in range(N_EVAL):
        a, b = bare[position], full[position]
        assert set(a) == set(b) and not a["has_mano"] and a["index"] == b["index"]
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["K"], b["K"])
        assert all(a[key].isnan().all() for key in ("keypoints_3d", "keypoints_2d", "vertices"))
        assert not a["mano_pose"].any() and not a["mano_shape"].any()
    (copy / "evaluation_K.json").unlink()
    with pytest.raises(DataError, match="lacks evaluation_K.json"):
        FreiHANDDataset(copy, "evaluation", labels=False, progress=False)
    with pytest.raises(DataError, match="augment needs the labels"):
        FreiHANDDataset(tiny_root, labels=False, augment=Augmentation(), progress=False)
