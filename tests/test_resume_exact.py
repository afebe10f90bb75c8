"""Exact mid-epoch resume: `handmesh fit` stopped part-way through an epoch (InterruptCheckpoint's last.ckpt, as a
SIGTERM leaves it) and continued with `--ckpt_path last` trains on the same batches, in the same order, as a run that
never stopped, and without Lightning's warning that the training DataLoader is not resumable.

With num_workers=0 the augmented images and the final weights are the same to the bit; with workers the batches'
samples are the same (each worker's augmentation stream starts again, see `handmesh.data.sampler`)."""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.exceptions import SIGTERMException
from torch.utils.data import Dataset

from handmesh.callbacks import RNGState
from handmesh.cli import main
from handmesh.data.sampler import ResumableLoader, ResumableSampler, shuffle_seed

from tiny_synth import tiny_synthetic_set

STEPS, STOP = 10, 3  # 7 batches of 4 an epoch: stopped in the first epoch, resumed across the epoch boundary


@pytest.fixture(scope="module")
def root(pytestconfig, tmp_path_factory):
    return tiny_synthetic_set(pytestconfig, tmp_path_factory)


class RecordBatches(pl.Callback):
    """Appends one JSON line per training batch to `path`: the global step, the images' file numbers and a digest of
    the (augmented) image bytes."""

    def __init__(self, path: str):
        self.path = Path(path)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        image = batch["image"].cpu().contiguous().numpy().tobytes()
        line = {"step": trainer.global_step, "index": batch["index"].tolist(),
                "image": hashlib.sha256(image).hexdigest()[:16]}
        with self.path.open("a") as file:
            file.write(json.dumps(line) + "\n")


class StopAt(pl.Callback):
    """Stops training as a SIGTERM does (InterruptCheckpoint saves last.ckpt, exit status 143) at step `step`."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            raise SIGTERMException


class NoisyItems(Dataset):
    """Item i: (i, a uniform from torch's stream), the stream an augmentation draws from."""

    def __len__(self) -> int:
        return 10

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.tensor(index), torch.rand(())


class TinyModel(pl.LightningModule):
    """One weight fitted to the noise; `seen` lists (step, item ids, noise) of each training batch."""

    def __init__(self, workers: int = 0):
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)
        self.workers = workers
        self.seen: list[tuple[int, list[int], list[float]]] = []

    def training_step(self, batch, batch_idx):
        ids, noise = batch
        self.seen.append((self.global_step, ids.tolist(), noise.tolist()))
        return ((self.layer(noise[:, None]) - 1.0) ** 2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self) -> ResumableLoader:
        items = NoisyItems()
        return ResumableLoader(items, batch_size=3, sampler=ResumableSampler(items, shuffle_seed(None)), drop_last=True,
                               num_workers=self.workers, persistent_workers=self.workers > 0)


class SaveAt(pl.Callback):
    """Saves `<folder>/step<k>.ckpt` at the end of each training batch that reaches step k in `steps`."""

    def __init__(self, folder: Path, steps: tuple[int, ...]):
        self.folder, self.steps = folder, steps

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step in self.steps:
            trainer.save_checkpoint(self.folder / f"step{trainer.global_step}.ckpt")


def _tiny_fit(model: TinyModel, seed: int, callbacks: list, ckpt_path: Path | None = None) -> list[str]:
    """Eight steps (3 batches an epoch); the warnings raised."""
    pl.seed_everything(seed, verbose=False)
    trainer = pl.Trainer(accelerator="cpu", max_steps=8, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[RNGState(), *callbacks])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(model, ckpt_path=ckpt_path)
    return [str(warning.message) for warning in caught]


@pytest.mark.parametrize("workers", [0, 2])
def test_resumed_loader_continues_the_epoch_it_stopped_in(tmp_path, workers):
    """Checkpoints after step 2 and 4 (mid-epoch) and 3 and 6 (epoch ends); a resume from each, under another global
    seed, trains on the batches the straight run trained on from there; with num_workers=0, also on the same noise and
    to the same weight."""
    straight = TinyModel(workers)
    _tiny_fit(straight, 0, [SaveAt(tmp_path, (2, 3, 4, 6))])
    assert [step for step, _, _ in straight.seen] == list(range(8))
    epochs = [sorted(sum((ids for _, ids, _ in straight.seen[first:first + 3]), [])) for first in (0, 3)]
    assert len(set(epochs[0])) == len(set(epochs[1])) == 9
    assert straight.seen[0][1] != straight.seen[3][1]  # each epoch shuffled anew
    for step in (2, 3, 4, 6):
        resumed = TinyModel(workers)
        caught = _tiny_fit(resumed, 1, [], tmp_path / f"step{step}.ckpt")
        assert not [message for message in caught if "not resumable" in message]
        if workers:
            assert [seen[:2] for seen in resumed.seen] == [seen[:2] for seen in straight.seen[step:]], step
        else:
            assert resumed.seen == straight.seen[step:], step
            assert torch.equal(resumed.layer.weight, straight.layer.weight)


def _fit(root: Path, run: Path, record: Path, workers: int, *extra: str, stop: bool = False) -> tuple[int, list[str]]:
    """`handmesh fit` in this process, stopped at step STOP if `stop`: exit status and the warnings it raised."""
    callbacks = [{"class_path": "test_resume_exact.RecordBatches", "init_args": {"path": str(record)}}]
    if stop:
        callbacks.append({"class_path": "test_resume_exact.StopAt", "init_args": {"step": STOP}})
    args = ["fit", "--config", "configs/quickstart.yaml", "--data.root", str(root), "--data.batch_size", "4",
            "--data.num_workers", str(workers), "--data.augment", "true", "--model.input_size", "64",
            "--trainer.default_root_dir", str(run), "--trainer.logger", "false", "--trainer.max_steps", str(STEPS),
            "--trainer.val_check_interval", "null", "--trainer.check_val_every_n_epoch", "1", "--trainer.max_time",
            "null", "--model.warmup_steps", "2", "--trainer.callbacks", json.dumps(callbacks), *extra]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main(args)
    return code, [str(warning.message) for warning in caught]


def _batches(record: Path) -> list[dict]:
    return [json.loads(line) for line in record.read_text().splitlines()]


def _resume(root: Path, run: Path, record: Path, workers: int) -> list[dict]:
    """`--ckpt_path last` in `run`, with no warning that the training DataLoader is not resumable: all batches of
    `record`."""
    code, caught = _fit(root, run, record, workers, "--ckpt_path", "last")
    assert code == 0
    assert not [message for message in caught if "not resumable" in message]
    return _batches(record)


@pytest.mark.slow
def test_a_run_resumed_mid_epoch_sees_the_batches_of_an_uninterrupted_run(root, tmp_path):
    straight_run, straight_record = tmp_path / "straight", tmp_path / "straight.jsonl"
    assert _fit(root, straight_run, straight_record, 0)[0] == 0
    straight = _batches(straight_record)
    assert [batch["step"] for batch in straight] == list(range(STEPS))
    first_epoch = sorted(sum((batch["index"] for batch in straight[:7]), []))
    assert first_epoch == sorted(set(first_epoch)) and len(first_epoch) == 28  # an epoch is each image once
    assert [b["index"] for b in straight[7:]] != [b["index"] for b in straight[:STEPS - 7]]  # reshuffled each epoch

    run, record = tmp_path / "resumed", tmp_path / "resumed.jsonl"
    assert _fit(root, run, record, 0, stop=True)[0] == 143
    last = run / "checkpoints" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == STOP
    with_workers = tmp_path / "with_workers"
    (with_workers / "checkpoints").mkdir(parents=True)
    shutil.copy(last, with_workers / "checkpoints" / "last.ckpt")

    resumed = _resume(root, run, record, workers=0)
    assert resumed == straight  # steps, samples and augmented images, batch for batch
    a = torch.load(straight_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    b = torch.load(last, map_location="cpu", weights_only=True)
    assert a["global_step"] == b["global_step"] == STEPS
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key

    record = tmp_path / "with_workers.jsonl"
    record.write_text("".join(json.dumps(batch) + "\n" for batch in straight[:STOP]))
    resumed = _resume(root, with_workers, record, workers=2)
    assert [(batch["step"], batch["index"]) for batch in resumed] == [(b["step"], b["index"]) for b in straight]
