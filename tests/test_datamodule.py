"""FreiHANDDataModule: splits, batches (NCHW-contiguous images), workers, seeding, YAML construction."""

from __future__ import annotations

import shutil

import cv2
import jsonargparse
import numpy as np
import pytest
import torch

from handmesh.data.datamodule import FreiHANDDataModule, freihand_loader
from handmesh.data.freihand import FreiHANDDataset
from handmesh.errors import DataError, message

from conftest import TINY_EVAL as N_EVAL, TINY_TRAIN as N_TRAIN


def test_splits_and_batches(tiny_root):
    module = FreiHANDDataModule(str(tiny_root), batch_size=4, num_workers=0, input_size=96, val_fraction=0.34)
    module.setup("fit")
    train_ids = {int(i) % N_TRAIN for i in module.train_set.indices}
    val_ids = {int(i) % N_TRAIN for i in module.val_set.indices}
    assert not train_ids & val_ids and len(val_ids) == 2
    batch = next(iter(module.train_dataloader()))
    assert batch["image"].shape == (4, 3, 96, 96) and batch["image"].is_contiguous()
    assert batch["image"].dtype == torch.uint8  # the encoder scales and normalises
    assert batch["K"].shape == (4, 3, 3) and batch["vertices"].shape == (4, 778, 3)
    assert batch["sample_id"].dtype == torch.long and batch["has_mano"].dtype == torch.bool
    assert module.val_set.augment is None and module.train_set.augment is not None
    module.setup("test")
    test_batch = next(iter(module.test_dataloader()))
    assert test_batch["index"].tolist() == list(range(N_EVAL))
    assert next(iter(module.predict_dataloader()))["index"].tolist() == list(range(N_EVAL))


def test_images_reach_the_model_nchw_contiguous(tiny_root):
    module = FreiHANDDataModule(str(tiny_root), batch_size=2, num_workers=0, input_size=64)
    batch = {"image": torch.zeros(2, 64, 64, 3).permute(0, 3, 1, 2)}  # a channels-last view, as a bad collate gives
    assert not batch["image"].is_contiguous()
    assert module.on_after_batch_transfer(batch, 0)["image"].is_contiguous()


def test_workers_and_seeding_reproduce_augmentation(tiny_root):
    def first_batch(seed):
        module = FreiHANDDataModule(str(tiny_root), batch_size=4, num_workers=2, input_size=64, seed=seed)
        loader = module.train_dataloader()
        assert loader.persistent_workers and loader.num_workers == 2
        batch = next(iter(loader))
        assert len({tensor.untyped_storage().data_ptr() for tensor in batch.values()}) == 1  # one block handed over
        return batch["sample_id"], batch["keypoints_2d"]

    ids_a, keypoints_a = first_batch(7)
    ids_b, keypoints_b = first_batch(7)
    ids_c, keypoints_c = first_batch(8)
    assert torch.equal(ids_a, ids_b) and torch.equal(keypoints_a, keypoints_b)
    assert not (torch.equal(ids_a, ids_c) and torch.allclose(keypoints_a, keypoints_c))


def test_workers_run_opencv_on_one_thread_even_after_this_process_started_its_pool(tiny_root):
    previous = cv2.getNumThreads()
    cv2.setNumThreads(2)
    cv2.warpAffine(np.zeros((1500, 1500, 4), np.uint8), np.eye(2, 3), (1500, 1500))  # OpenCV's threads now run here
    try:
        dataset = FreiHANDDataset(tiny_root, "training", input_size=64, val_fraction=0.0, progress=False)
        loader = freihand_loader(dataset, batch_size=4, num_workers=2)
        assert cv2.getNumThreads() == 1  # set before the workers fork: in them, it would hang
        loader.timeout = 60  # seconds: a hung worker fails the test instead of stalling it
        sizes = [len(batch["index"]) for batch in loader]
        assert sum(sizes) == len(dataset) and sizes[0] == 4
    finally:
        cv2.setNumThreads(previous)


def test_augmentation_switches(tiny_root):
    module = FreiHANDDataModule(str(tiny_root), rotation_deg=0.0, occlusion_prob=0.5)
    assert module.augmentation.rotation_deg == 0.0 and module.augmentation.occlusion_prob == 0.5
    assert module.augmentation.scale == FreiHANDDataModule(str(tiny_root)).augmentation.scale  # defaults kept
    assert FreiHANDDataModule(str(tiny_root), augment=False).augmentation is None
    no_val = FreiHANDDataModule(str(tiny_root), val_fraction=0.0, num_workers=0)
    assert no_val.val_dataloader() == []


def test_built_from_yaml_like_lightning_cli(tiny_root):
    parser = jsonargparse.ArgumentParser()
    parser.add_class_arguments(FreiHANDDataModule, "data")
    config = parser.parse_string(f"data:\n  root: {tiny_root}\n  batch_size: 3\n  input_size: 128\n  augment: false\n")
    module = parser.instantiate_classes(config).data
    assert isinstance(module, FreiHANDDataModule) and module.batch_size == 3 and module.augmentation is None


def test_a_worker_error_keeps_its_class_and_message(tiny_root, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(tiny_root, root, ignore=shutil.ignore_patterns("*.npy"))
    broken = root / "evaluation" / "rgb" / "00000001.jpg"
    broken.write_bytes(b"not a jpeg at all")
    loader = freihand_loader(FreiHANDDataset(root, "evaluation", input_size=64, progress=False), 1, num_workers=2)
    with pytest.raises(DataError) as raised:
        list(loader)
    assert "Traceback" in str(raised.value)  # torch's re-raise: the worker's traceback around the message
    assert message(raised.value) == (f"image {broken} cannot be decoded as an image; expected a JPEG. Re-extract the "
                                     "dataset, or pass on_bad_image='skip' to skip such images (they are counted and "
                                     "warned about).")
    assert message(DataError("plain\nmessage")) == "plain\nmessage"
