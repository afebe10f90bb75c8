"""The training DataLoader that can stop part-way through an epoch and go on from the same batch.

`ResumableSampler` shuffles with a permutation that is a pure function of (seed, epoch) and can start an epoch at a
given sample; `ResumableLoader` counts the batches it has handed out and saves (seed, epoch, batches) through the
`state_dict` / `load_state_dict` pair that Lightning keeps in a checkpoint's loop state (`loops.fit_loop.state_dict
.combined_loader`), so `--ckpt_path last` from a mid-epoch checkpoint continues with the next batch of the same order.

What a resumed run sees, batch for batch, as the run that never stopped:
- the same samples in the same order, with any number of workers;
- with num_workers=0, the same augmentation as well: items draw it from this process's torch stream, which
  `callbacks.RNGState` restores;
- with workers, each worker's augmentation stream starts again from its seed (DataLoader seeds worker w with a base
  seed from this loader's generator, + w), so from the resume on the augmentation differs from the uninterrupted
  run's (reproducibly: one checkpoint resumes the same way each time).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sized

import torch
from torch.utils.data import DataLoader, DistributedSampler


class ResumableSampler(DistributedSampler):
    """Dataset positions in a shuffled order that depends only on (seed, epoch): epoch e is `torch.randperm` seeded
    with seed + e (as `DistributedSampler`, whose rank split and padding it keeps, so Lightning does not replace it
    under DDP). `start` positions of this rank's share are skipped when the next epoch's iteration begins; a new
    epoch (`set_epoch` with another number) starts at 0. Lightning calls `set_epoch` before each epoch."""

    def __init__(self, dataset: Sized, seed: int, num_replicas: int = 1, rank: int = 0):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=False)
        self.start = 0  # positions of this epoch already handed out (skipped by the next __iter__)

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.start = 0
        super().set_epoch(epoch)

    def __iter__(self) -> Iterator[int]:
        order = list(super().__iter__())  # (num_samples,) this rank's positions, seeded with seed + epoch
        return iter(order[self.start:])


class ResumableLoader(DataLoader):
    """A DataLoader over a `ResumableSampler` whose position in the epoch is saved with the checkpoint.

    The position counts the batches this process has handed to the training loop (not those the workers have
    prefetched): `state_dict()` is {"seed", "epoch", "batches", "samples"} (samples: this rank's share of the dataset,
    to notice a different dataset). Iteration starts on the first `next`, so a `set_epoch` between `iter` and
    `next` (Lightning's order) takes effect. An iteration that runs to its end moves the sampler to the next epoch,
    so that plain `for batch in loader` loops reshuffle each pass.
    """

    sampler: ResumableSampler

    def __init__(self, dataset, batch_size: int, sampler: ResumableSampler, **kwargs):
        if not isinstance(sampler, ResumableSampler):
            raise TypeError(f"sampler is a {type(sampler).__name__}, expected a ResumableSampler")
        if "generator" in kwargs:
            raise TypeError("ResumableLoader makes its generator from the sampler's seed; pass no generator")
        # Its own generator, so that starting an iteration (which draws the workers' base seed) takes nothing from
        # torch's stream: a resumed run starts one where the run it continues did not.
        generator = torch.Generator().manual_seed(sampler.seed)
        super().__init__(dataset, batch_size=batch_size, sampler=sampler, generator=generator, **kwargs)

    def __iter__(self) -> _CountingIterator:
        return _CountingIterator(self)

    def state_dict(self) -> dict[str, int]:
        return {"seed": self.sampler.seed, "epoch": self.sampler.epoch,
                "batches": math.ceil(self.sampler.start / self.batch_size), "samples": self.sampler.num_samples}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.sampler.seed = int(state["seed"])
        self.generator.manual_seed(self.sampler.seed)  # the workers' base seeds, as the saved run drew them
        self.sampler.set_epoch(int(state["epoch"]))
        if int(state["samples"]) != self.sampler.num_samples:
            warnings.warn(f"the checkpoint's training epoch had {state['samples']} samples per process, this one has "
                          f"{self.sampler.num_samples}: the epoch it stopped in starts again from its beginning",
                          stacklevel=2)
            return
        self.sampler.start = int(state["batches"]) * self.batch_size


class _CountingIterator(Iterator):
    """One pass of a `ResumableLoader` from the sampler's start: DataLoader's own iterator, made on the first `next`,
    and the count of the batches handed out kept in the sampler's `start`."""

    def __init__(self, loader: ResumableLoader):
        self.loader = loader
        self.batches: Iterator | None = None

    def __len__(self) -> int:
        return len(self.loader)

    def __next__(self):
        sampler = self.loader.sampler
        if self.batches is None:
            self.batches = DataLoader.__iter__(self.loader)
        try:
            batch = next(self.batches)
        except StopIteration:
            sampler.set_epoch(sampler.epoch + 1)
            raise
        sampler.start += self.loader.batch_size
        return batch


def shuffle_seed(seed: int | None) -> int:
    """The shuffling seed: `seed`, or one drawn from torch's stream (which `seed_everything` fixes); under DDP rank 0's,
    so that the ranks split one permutation."""
    if seed is not None:
        return seed
    drawn = [int(torch.randint(0, 2**31, ()).item())]
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.broadcast_object_list(drawn, src=0)
    return drawn[0]


def process_share() -> tuple[int, int]:
    """(number of processes, this one's rank) of the initialised torch.distributed group, (1, 0) without one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size(), torch.distributed.get_rank()
    return 1, 0
