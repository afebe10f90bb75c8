"""LightningDataModule over a FreiHAND-format folder: train/val from `training` (held out by unique sample id),
test/predict on `evaluation`. Constructor arguments are plain types so LightningCLI can build it from YAML."""

from __future__ import annotations

import dataclasses
import signal

import cv2
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from handmesh.data.batch import collate_items
from handmesh.data.freihand import FreiHANDDataset
from handmesh.data.sampler import ResumableLoader, ResumableSampler, process_share, shuffle_seed
from handmesh.data.transforms import Augmentation


class FreiHANDDataModule(pl.LightningDataModule):
    """root: the FreiHAND_pub_v2 folder (real or from `handmesh synth`). augment switches training augmentation on;
    the strength arguments left at None take `Augmentation`'s defaults (0 turns a part off). seed makes shuffling and
    the per-worker augmentation streams reproducible (DataLoader seeds worker w with base_seed + w; items draw their
    augmentation from that torch stream); without one, the seed is drawn from torch's stream, which `seed_everything`
    fixes. Each epoch is shuffled differently. The training loader is resumable: a checkpoint written part-way through
    an epoch continues with the batch after the last one trained on (`sampler.ResumableLoader`). Batches are dicts of
    tensors (see FreiHANDDataset), each built by a worker in one block of memory and handed over whole
    (`batch.collate_items`); `image` NCHW-contiguous.
    """

    def __init__(
        self,
        root: str,
        batch_size: int = 32,
        num_workers: int = 2,
        input_size: int = 224,
        augment: bool = True,
        val_fraction: float = 0.05,
        scale: float | None = None,
        rotation_deg: float | None = None,
        translate: float | None = None,
        color_jitter: float | None = None,
        blur_prob: float | None = None,
        occlusion_prob: float | None = None,
        cache_dir: str | None = None,
        on_bad_image: str = "raise",
        seed: int | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.root = root
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.input_size = input_size
        self.val_fraction = val_fraction
        self.cache_dir = cache_dir
        self.on_bad_image = on_bad_image
        self.seed = seed
        strengths = dict(scale=scale, rotation_deg=rotation_deg, translate=translate, color_jitter=color_jitter,
                         blur_prob=blur_prob, occlusion_prob=occlusion_prob)
        self.augmentation = (
            dataclasses.replace(Augmentation(), **{k: v for k, v in strengths.items() if v is not None})
            if augment else None
        )
        self.train_set: FreiHANDDataset | None = None
        self.val_set: FreiHANDDataset | None = None
        self.test_set: FreiHANDDataset | None = None

    def _dataset(self, split: str, subset: str, augment: Augmentation | None) -> FreiHANDDataset:
        return FreiHANDDataset(
            self.root, split=split, input_size=self.input_size, subset=subset, val_fraction=self.val_fraction,
            augment=augment, cache_dir=self.cache_dir, on_bad_image=self.on_bad_image,
        )

    def setup(self, stage: str | None = None) -> None:
        if stage in ("fit", None) and self.train_set is None:
            self.train_set = self._dataset("training", "train", self.augmentation)
        if stage in ("fit", "validate", None) and self.val_set is None:
            self.val_set = self._dataset("training", "val", None)
        if stage in ("test", "predict", None) and self.test_set is None:
            self.test_set = self._dataset("evaluation", "all", None)

    def _loader(self, dataset: FreiHANDDataset, shuffle: bool) -> DataLoader:
        return freihand_loader(dataset, self.batch_size, self.num_workers, shuffle, self.seed)

    def train_dataloader(self) -> DataLoader:
        self.setup("fit")
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        self.setup("validate")
        return self._loader(self.val_set, shuffle=False) if len(self.val_set) else []  # [] = no validation

    def test_dataloader(self) -> DataLoader:
        self.setup("test")
        return self._loader(self.test_set, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        self.setup("predict")
        return self._loader(self.test_set, shuffle=False)

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        """Guarantees NCHW-contiguous images on the model's device (channels-last batches crash FastViT backward)."""
        batch["image"] = batch["image"].contiguous()
        return batch


def freihand_loader(dataset: FreiHANDDataset, batch_size: int, num_workers: int, shuffle: bool = False,
                    seed: int | None = None) -> DataLoader:
    """The DataLoader that training, validation and tests read `dataset` through (and `handmesh bench --what data`
    times): each batch built by a worker in one block of shared memory and handed over whole (`batch.collate_items`),
    persistent workers, pinned memory when there is a GPU; a seed fixes shuffling and the workers' augmentation.
    Shuffled, it is a `ResumableLoader` (its epoch position is saved in checkpoints; under torch.distributed each
    process reads its share of one permutation) and drops an incomplete last batch.

    With workers, OpenCV is set to one thread in this process, and so in the workers it forks: they are the
    parallelism, and OpenCV's own thread pool in each would only compete with them (4-7% of the loader's CPU time per
    image, measured on 2 cores). It is set here, before they fork, and not in them: `cv2.setNumThreads` in a forked
    worker hangs when this process had already started OpenCV's threads.

    Workers ignore SIGINT (`ignore_sigint`): a Ctrl+C reaches the terminal's whole process group, and it is this
    process's to handle (training finishes its batch and saves last.ckpt), not a reason for the workers to quit under
    it. SIGTERM keeps its default: multiprocessing ends leftover workers with it when this process exits.
    """
    if num_workers > 0:
        cv2.setNumThreads(1)
    options = dict(
        batch_size=batch_size,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        pin_memory=torch.cuda.is_available(),
        collate_fn=collate_items,  # each batch comes over as one block of shared memory (batch.py)
        worker_init_fn=ignore_sigint,
    )
    if not shuffle:  # its own generator: starting a pass (a validation) draws nothing from torch's stream
        return DataLoader(dataset, generator=torch.Generator().manual_seed(seed or 0), **options)
    sampler = ResumableSampler(dataset, shuffle_seed(seed), *process_share())
    return ResumableLoader(dataset, sampler=sampler, drop_last=len(sampler) > batch_size, **options)  # no tiny last


def ignore_sigint(worker_id: int) -> None:
    """DataLoader worker_init_fn: SIGINT (Ctrl+C) ignored, so that only the main process reacts to it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
