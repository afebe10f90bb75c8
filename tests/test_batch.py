"""Batches built in one block of memory: the same batch dict as `default_collate` of the items, one storage, handed
over whole by DataLoader workers, and an ordinary sequence of items for any other collate."""

from __future__ import annotations

import shutil

import pytest
import torch
from torch.utils.data import DataLoader, Subset, default_collate

from handmesh.data.batch import BatchItems, allocate, collate_items, item_fields, share
from handmesh.data.freihand import FreiHANDDataset
from handmesh.data.transforms import Augmentation

from conftest import TINY_TRAIN as N_TRAIN

STRONG = Augmentation(blur_prob=1.0, occlusion_prob=1.0)  # every augmentation path runs


def _storages(batch: dict) -> set[int]:
    return {tensor.untyped_storage().data_ptr() for tensor in batch.values()}


def _assert_same_batch(actual: dict, expected: dict) -> None:
    assert set(actual) == set(expected)
    for key, tensor in expected.items():
        assert actual[key].dtype == tensor.dtype and actual[key].shape == tensor.shape, key
        assert torch.equal(actual[key], tensor), key


def test_allocate_gives_contiguous_views_of_one_storage():
    batch = allocate(5, 32)
    fields = item_fields(32)
    assert {key: (tuple(t.shape), t.dtype) for key, t in batch.items()} == {
        key: ((5, *shape), dtype) for key, (shape, dtype) in fields.items()}
    assert len(_storages(batch)) == 1 and all(t.is_contiguous() for t in batch.values())
    for _, tensor in batch.items():  # the views do not overlap: filling one leaves the others as they were
        tensor.fill_(0)
    batch["vertices"].fill_(1.5)
    assert not batch["image"].any() and not batch["K"].any() and batch["vertices"].eq(1.5).all()


def test_share_copies_a_batch_into_one_block_of_shared_memory():
    batch = allocate(3, 16)
    for number, tensor in enumerate(batch.values()):
        tensor.copy_(torch.arange(tensor.numel()).reshape(tensor.shape) % (number + 2))  # a distinct pattern per field
    shared = share(batch)
    _assert_same_batch(shared, batch)
    assert len(_storages(shared)) == 1 and _storages(shared) != _storages(batch)
    assert all(tensor.is_shared() and tensor.is_contiguous() for tensor in shared.values())
    batch["vertices"].fill_(7.0)  # a copy: the builder's block can be reused for the next batch
    assert not shared["vertices"].eq(7.0).all()


def test_a_built_batch_equals_default_collate_of_the_items(tiny_root):
    dataset = FreiHANDDataset(tiny_root, "training", input_size=96, val_fraction=0.0, augment=STRONG, progress=False)
    positions = [5, 0, N_TRAIN + 3, 4 * N_TRAIN - 1]
    torch.manual_seed(11)
    items = dataset.__getitems__(positions)
    batch = collate_items(items)
    torch.manual_seed(11)  # the same augmentation draws, item by item
    expected = default_collate([dataset[position] for position in positions])
    _assert_same_batch(batch, expected)
    assert len(_storages(batch)) == 1
    assert batch["index"].tolist() == [5, 0, N_TRAIN + 3, 4 * N_TRAIN - 1]
    assert batch["version"].tolist() == [0, 0, 1, 3] and batch["has_mano"].all()
    _assert_same_batch(default_collate(items), batch)  # what any other DataLoader makes of the same items
    assert isinstance(items, BatchItems) and len(items) == 4 and int(items[2]["sample_id"]) == 3


def test_workers_hand_over_one_block_and_subsets_still_collate(tiny_root):
    dataset = FreiHANDDataset(tiny_root, "training", input_size=64, val_fraction=0.0, progress=False)
    loader = DataLoader(dataset, batch_size=5, num_workers=2, collate_fn=collate_items)
    batches = list(loader)
    assert [len(batch["index"]) for batch in batches] == [5] * (4 * N_TRAIN // 5) + [4 * N_TRAIN % 5]
    assert all(len(_storages(batch)) == 1 for batch in batches)
    assert torch.cat([batch["index"] for batch in batches]).tolist() == list(range(4 * N_TRAIN))
    plain = next(iter(DataLoader(Subset(dataset, [7, 2]), batch_size=2)))  # default_collate through Subset
    _assert_same_batch(plain, default_collate([dataset[7], dataset[2]]))


def test_skipped_images_and_missing_mano_in_a_batch(tiny_root, tmp_path):
    root = tmp_path / "FreiHAND_pub_v2"
    shutil.copytree(tiny_root, root, ignore=shutil.ignore_patterns("*.npy", "training_mano.json"))
    (root / "training" / "rgb" / "00000001.jpg").write_bytes(b"broken")
    dataset = FreiHANDDataset(root, "training", input_size=64, val_fraction=0.0, on_bad_image="skip", progress=False)
    with pytest.warns(UserWarning, match="00000001.jpg"):
        batch = collate_items(dataset.__getitems__([0, 1, 2]))
    assert batch["index"].tolist() == [0, 2, 2]  # the unreadable image's slot holds the next readable one
    assert not batch["has_mano"].any() and not batch["mano_pose"].any() and not batch["mano_shape"].any()
    assert torch.equal(batch["image"][1], batch["image"][2])
