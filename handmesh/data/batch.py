"""A batch of FreiHAND items in one block of memory, and the collate function that hands it over whole.

A DataLoader worker passes every tensor of a batch to the main process through shared memory: one segment and one
file-descriptor round trip per *storage*. A default-collated batch dict has 11 tensors, so 11 of them (~0.7 ms per
224 px image on 2 cores, more than a JPEG decode). Here the dataset writes a batch straight into views of ONE storage
(`allocate`) and a worker copies that block into shared memory in one write (`share`): the same keys, shapes and
dtypes as `default_collate` makes, each view contiguous, one hand-over.

    loader = DataLoader(dataset, batch_size=32, num_workers=2, collate_fn=collate_items)  # batches: dicts as before

Without `collate_items` (any other DataLoader, `torch.utils.data.Subset`, ...) the same `BatchItems` is an ordinary
sequence of per-item dicts, and `default_collate` stacks them exactly as it does `dataset[i]` items.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import default_collate

from handmesh.joints import NUM_BETAS, NUM_KEYPOINTS, NUM_POSE_PARAMS, NUM_VERTICES

_ALIGN = 64  # bytes: every field starts on a cache line, so any dtype's view is aligned


def item_fields(input_size: int) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Per-item shape and dtype of every batch field (docs/data.md, "Data batches"; batches add a leading B)."""
    return {
        "image": ((3, input_size, input_size), torch.uint8),  # RGB planes, 0..255
        "K": ((3, 3), torch.float32),  # crop intrinsics, pixels
        "keypoints_3d": ((NUM_KEYPOINTS, 3), torch.float32),  # metres, camera frame
        "keypoints_2d": ((NUM_KEYPOINTS, 2), torch.float32),  # crop pixels
        "vertices": ((NUM_VERTICES, 3), torch.float32),  # metres, camera frame
        "mano_pose": ((NUM_POSE_PARAMS,), torch.float32),  # axis-angle, relative to hands_mean
        "mano_shape": ((NUM_BETAS,), torch.float32),
        "has_mano": ((), torch.bool),
        "sample_id": ((), torch.int64),
        "version": ((), torch.int64),
        "index": ((), torch.int64),
    }


SCALARS = ("has_mano", "sample_id", "version", "index")  # per item: Python bool / int, as `dataset[i]` gives them


def allocate(batch_size: int, input_size: int) -> dict[str, torch.Tensor]:
    """Uninitialised batch tensors (B, *item shape) as contiguous views of one new private storage."""
    fields = item_fields(input_size)
    sizes = {key: batch_size * int(np.prod(shape, dtype=np.int64)) * torch.empty((), dtype=dtype).element_size()
             for key, (shape, dtype) in fields.items()}  # bytes
    offsets, total = {}, 0
    for key, size in sizes.items():
        offsets[key] = total
        total += -(-size // _ALIGN) * _ALIGN
    block = torch.empty(total, dtype=torch.uint8)  # (total,) bytes
    return {
        key: block[offsets[key] : offsets[key] + sizes[key]].view(dtype).view(batch_size, *shape)
        for key, (shape, dtype) in fields.items()
    }


def share(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A copy of `batch` (from `allocate`) in one new block of shared memory, the form a DataLoader worker hands over.

    The bytes go in through the shared file (`os.pwrite`, torch's default "file_descriptor" sharing) rather than
    through its mapping: filling a fresh shared mapping page by page costs a fault per 4 KiB page (~6.5 ms instead of
    ~3.5 ms per 5 MB batch measured here), while the batch itself is built in memory the process reuses."""
    source = next(iter(batch.values())).untyped_storage()
    nbytes = source.nbytes()
    target = torch.UntypedStorage._new_shared(nbytes)  # as `default_collate` allocates in a worker
    by_file = hasattr(os, "pwrite") and hasattr(target, "_share_fd_cpu_")  # POSIX, and torch's fd sharing at hand
    if by_file and torch.multiprocessing.get_sharing_strategy() == "file_descriptor":
        fd, _ = target._share_fd_cpu_()  # the file torch hands over (and would look up itself when pickling)
        data = memoryview(torch.empty(0, dtype=torch.uint8).set_(source).numpy())
        written = 0
        while written < nbytes:
            written += os.pwrite(fd, data[written:], written)
    else:
        target.copy_(source)
    return {key: torch.empty(0, dtype=tensor.dtype).set_(target, tensor.storage_offset(), tensor.shape, tensor.stride())
            for key, tensor in batch.items()}


class BatchItems(Sequence):
    """The items of one batch built in place (`batch`, from `allocate`), readable one by one as `dataset[i]` dicts
    (tensors are views into the batch; has_mano / sample_id / version / index Python scalars)."""

    def __init__(self, batch: dict[str, torch.Tensor], scalars: list[dict[str, bool | int]]):
        self.batch = batch
        self._scalars = scalars  # one {has_mano, sample_id, version, index} per item
        self._items: list[dict] | None = None

    def __len__(self) -> int:
        return len(self._scalars)

    def __getitem__(self, position):
        if self._items is None:  # built on first use only: `collate_items` never needs them
            self._items = [
                {**{key: tensor[slot] for key, tensor in self.batch.items() if key not in SCALARS}, **scalars}
                for slot, scalars in enumerate(self._scalars)
            ]
        return self._items[position]


def collate_items(items: Sequence) -> dict[str, torch.Tensor]:
    """DataLoader collate_fn: a `BatchItems` is already its batch (no copy, one storage); anything else (a list of
    item dicts) goes through `default_collate`."""
    if isinstance(items, BatchItems):
        return items.batch
    return default_collate(items)

