"""Interrupted training loses nothing: `handmesh fit` stopped by SIGTERM or SIGINT mid-epoch saves last.ckpt of the
step it reached and exits 143 / 130, `--ckpt_path last` continues from that step, and a truncated last.ckpt is refused
without being overwritten. Every run is a real `handmesh fit` subprocess on the tiny synthetic set."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from tiny_synth import tiny_synthetic_set

REPO = Path(__file__).resolve().parents[1]
# 8 unique samples, one held out for validation: 7 x 4 = 28 training images, 7 batches of 4 an epoch
STEPS_PER_EPOCH = 7


@pytest.fixture(scope="module")
def root(pytestconfig, tmp_path_factory):
    return tiny_synthetic_set(pytestconfig, tmp_path_factory)


class SignalAt(pl.Callback):
    """Sends `signum` `times` times when the batch after `step` optimizer steps starts: to this process, or with `group`
    to its whole process group (DataLoader workers included), as a Ctrl+C in a terminal does."""

    def __init__(self, step: int, signum: int, group: bool = False, times: int = 1):
        self.step, self.signum, self.group, self.times = step, signum, group, times

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            for _ in range(self.times):
                if self.group:
                    os.killpg(os.getpgid(0), self.signum)
                else:
                    os.kill(os.getpid(), self.signum)
                # Standard signals do not queue: a second one sent before the first is taken would merge with it.
                time.sleep(0.3)


class SignalInValidation(pl.Callback):
    """Sends SIGTERM to this process when the first validation batch after the sanity check starts."""

    def __init__(self):
        self.sent = False

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if not trainer.sanity_checking and not self.sent:
            self.sent = True
            os.kill(os.getpid(), signal.SIGTERM)


class FirstStep(pl.Callback):
    """Writes the global step the first training batch starts at to `path`."""

    def __init__(self, path: str):
        self.path, self.done = path, False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if not self.done:
            Path(self.path).write_text(str(trainer.global_step))
            self.done = True


def _fit(root, run_dir, *extra, workers: int = 0, callbacks: str = "[]", env: dict | None = None
         ) -> subprocess.CompletedProcess:
    args = ["fit", "--config", "configs/quickstart.yaml", "--data.root", str(root), "--data.batch_size", "4",
            "--data.num_workers", str(workers), "--model.input_size", "64", "--trainer.default_root_dir",
            str(run_dir), "--trainer.logger", "false", "--trainer.max_steps", "10", "--trainer.val_check_interval",
            "null", "--trainer.check_val_every_n_epoch", "1", "--trainer.max_time", "null", "--model.warmup_steps",
            "2", "--trainer.callbacks", callbacks, *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests'}", **(env or {})}
    # Its own process group (for killpg), with Ctrl+C's default action: a shell's background job (`make test &`)
    # starts its children with SIGINT ignored, and then Python has no KeyboardInterrupt to raise.
    return subprocess.run([sys.executable, "-m", "handmesh.cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600, start_new_session=True,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _signal_at(step: int, signum: int, group: bool = False, times: int = 1) -> str:
    init = f'{{"step": {step}, "signum": {int(signum)}, "group": {str(group).lower()}, "times": {times}}}'
    return f'[{{"class_path": "test_interrupts.SignalAt", "init_args": {init}}}]'


def _global_step(path: Path) -> int:
    return torch.load(path, map_location="cpu", weights_only=True)["global_step"]


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2])
def test_sigterm_mid_epoch_saves_the_step_and_resume_continues_there(root, tmp_path, workers):
    run = tmp_path / "run"
    stopped = _fit(root, run, workers=workers, callbacks=_signal_at(3, signal.SIGTERM))
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    last = run / "checkpoints" / "last.ckpt"
    assert _global_step(last) == 4 < STEPS_PER_EPOCH  # the batch under way when the signal came was finished
    assert f"saved step 4 to {last}" in stopped.stderr and "--ckpt_path last" in stopped.stderr
    assert "Traceback" not in stopped.stderr
    first = tmp_path / "first_step.txt"
    callbacks = f'[{{"class_path": "test_interrupts.FirstStep", "init_args": {{"path": "{first}"}}}}]'
    resumed = _fit(root, run, "--ckpt_path", "last", workers=workers, callbacks=callbacks)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert first.read_text() == "4"
    assert _global_step(last) == 10


@pytest.mark.slow
def test_sigint_to_the_process_group_exits_130_with_last_ckpt(root, tmp_path):
    run = tmp_path / "run"
    stopped = _fit(root, run, workers=2, callbacks=_signal_at(2, signal.SIGINT, group=True))
    assert stopped.returncode == 130, stopped.stderr[-3000:]
    assert _global_step(run / "checkpoints" / "last.ckpt") == 3
    assert "stopped by SIGINT" in stopped.stderr and "Traceback" not in stopped.stderr


@pytest.mark.slow
def test_a_second_sigint_stops_at_once_without_a_checkpoint(root, tmp_path):
    run = tmp_path / "run"
    stopped = _fit(root, run, callbacks=_signal_at(2, signal.SIGINT, times=2))
    assert stopped.returncode == 130, stopped.stderr[-3000:]
    assert stopped.stderr.splitlines()[-1] == "handmesh fit: interrupted"
    assert not (run / "checkpoints" / "last.ckpt").exists()


@pytest.mark.slow
def test_periodic_last_ckpt(root, tmp_path):
    """--last_every_minutes 1e-9: last.ckpt after every training batch, so a SIGKILL at step 3 leaves step 3."""
    run = tmp_path / "run"
    killed = _fit(root, run, "--last_every_minutes", "1e-9", callbacks=_signal_at(3, signal.SIGKILL))
    assert killed.returncode == -signal.SIGKILL
    assert _global_step(run / "checkpoints" / "last.ckpt") == 3
    assert not list((run / "checkpoints").glob(".*"))  # no temporary left by the atomic writes (handmesh.atomic)


@pytest.mark.slow
def test_truncated_last_ckpt_exits_2_and_is_kept(root, tmp_path):
    run = tmp_path / "run"
    stopped = _fit(root, run, callbacks=_signal_at(1, signal.SIGTERM))
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    last = run / "checkpoints" / "last.ckpt"
    truncated = last.read_bytes()[: last.stat().st_size // 2]
    last.write_bytes(truncated)
    resumed = _fit(root, run, "--ckpt_path", "last")
    assert resumed.returncode == 2
    lines = resumed.stderr.strip().splitlines()
    assert "not a readable checkpoint" in lines[-1] and str(last) in lines[-1]
    assert "Traceback" not in resumed.stderr
    assert last.read_bytes() == truncated and sorted(path.name for path in last.parent.iterdir()) == ["last.ckpt"]


def test_negative_period_exits_2(root, tmp_path, capsys):
    from handmesh.cli import main

    code = main(["fit", "--config", "configs/quickstart.yaml", "--data.root", str(root), "--last_every_minutes", "-1",
                 "--trainer.default_root_dir", str(tmp_path), "--trainer.fast_dev_run", "1"])
    assert code == 2
    assert "--last_every_minutes is -1.0" in capsys.readouterr().err


@pytest.mark.slow
def test_sigterm_to_rank_0_of_a_ddp_run_stops_every_rank_at_the_same_step(root, tmp_path):
    """DDP with 2 CPU processes (gloo), the signal to rank 0 only: the ranks agree, rank 0 writes last.ckpt."""
    run = tmp_path / "run"
    stopped = _fit(root, run, "--data.batch_size", "2", "--trainer.devices", "2", "--trainer.strategy", "ddp",
                   callbacks=_signal_at(3, signal.SIGTERM))
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    assert _global_step(run / "checkpoints" / "last.ckpt") == 4
    assert stopped.stderr.count("handmesh: stopped by SIGTERM: saved step 4") == 1  # rank 0 says it, once


@pytest.mark.slow
def test_sigterm_during_a_mid_epoch_validation(root, tmp_path):
    """Validation after step 3 of 14 (batch 2, 2 validation batches): the run stops there and resumes at step 3."""
    run = tmp_path / "run"
    interval = ["--data.batch_size", "2", "--trainer.val_check_interval", "3", "--trainer.check_val_every_n_epoch",
                "null"]
    stopped = _fit(root, run, *interval, callbacks='[{"class_path": "test_interrupts.SignalInValidation"}]')
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    last = run / "checkpoints" / "last.ckpt"
    assert _global_step(last) == 3
    first = tmp_path / "first_step.txt"
    callbacks = f'[{{"class_path": "test_interrupts.FirstStep", "init_args": {{"path": "{first}"}}}}]'
    resumed = _fit(root, run, *interval, "--ckpt_path", "last", callbacks=callbacks)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert first.read_text() == "3" and _global_step(last) == 10


@pytest.mark.slow
def test_slurm_auto_requeue_still_gets_sigusr1(root, tmp_path):
    """Under SLURM, Lightning's SIGUSR1 handler (auto-requeue) saves its hpc checkpoint and training goes on; `scontrol`
    is missing here, so its requeue call fails and is logged."""
    run = tmp_path / "run"
    slurm = {"SLURM_NTASKS": "1", "SLURM_JOB_ID": "1234", "SLURM_JOB_NAME": "train", "SLURM_NODELIST": "localhost",
             "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0"}
    result = _fit(root, run, "--trainer.max_steps", "4", callbacks=_signal_at(2, signal.SIGUSR1), env=slurm)
    assert result.returncode == 0, result.stderr[-3000:]
    assert _global_step(run / "hpc_ckpt_1.ckpt") == 2 and _global_step(run / "checkpoints" / "last.ckpt") == 4
