"""Lightning plumbing around training: atomic checkpoint files, exact resume of random states, mesh images in logs.

`default_callbacks(root)` are the callbacks every `handmesh fit` run gets (best + last checkpoints, a last.ckpt when
interrupted and every 30 minutes, a validation before the end, random states, progress lines in logs);
`ValidationMeshImages` is opt-in from the YAML configs (it needs a TensorBoard logger).
"""

from __future__ import annotations

import random
import signal
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.plugins import TorchCheckpointIO
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities.exceptions import SIGTERMException

from handmesh.checkpoints import atomic_save, metadata, read_checkpoint
from handmesh.lightning_progress import ProgressLines
from handmesh.render import MeshRenderer, RendererUnavailable, overlay, render_mesh_opencv

MONITOR = "val/pa_mpjpe_mm"  # the best checkpoint has the lowest validation PA-MPJPE
LAST_NAME = "last.ckpt"  # what `--ckpt_path last` finds in the checkpoint folder
LAST_EVERY_MINUTES = 30.0  # how often training refreshes last.ckpt by default (bounds what a SIGKILL loses)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes checkpoints to a temporary file then renames it (a crash never leaves a half-written .ckpt); reads them
    with weights_only and turns corrupt or foreign files into a CheckpointError."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        atomic_save(checkpoint, path)

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
        checkpoint = read_checkpoint(path, map_location="cpu")
        metadata(checkpoint, path)
        return checkpoint


class BestAndLastCheckpoint(ModelCheckpoint):
    """`<root>/checkpoints/best.ckpt` (lowest val PA-MPJPE) and `last.ckpt` (for `--ckpt_path last`).

    Lightning 2.6 refreshes last.ckpt only when best.ckpt is saved, and writes it at the end of fast_dev_run runs;
    here last.ckpt is the latest state after every validation and at the end of training (e.g. at max_time), and
    fast_dev_run writes nothing. The names are fixed: a run resumed from a last.ckpt that another callback wrote
    (`InterruptCheckpoint`) overwrites it rather than starting a last-v1.ckpt.
    """

    def __init__(self, root_dir: str | Path):
        super().__init__(dirpath=Path(root_dir) / "checkpoints", filename="best", monitor=MONITOR, mode="min",
                         save_top_k=1, save_last=True, auto_insert_metric_name=False, save_on_train_epoch_end=False,
                         enable_version_counter=False)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero and not trainer.fast_dev_run:
            folders = [getattr(logger, "log_dir", None) for logger in trainer.loggers]
            logs = [str(Path(folder).resolve()) for folder in folders if folder]
            print(f"handmesh fit: checkpoints in {Path(self.dirpath).resolve()}"
                  + (f"; logs in {', '.join(logs)}" if logs else "; no logger"), file=sys.stderr, flush=True)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        self._refresh_last(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._refresh_last(trainer)

    def _refresh_last(self, trainer: pl.Trainer) -> None:
        if trainer.fast_dev_run or trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        if self._last_global_step_saved != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


class ValidateBeforeEnd(Callback):
    """Makes the last training step of a run that has not validated yet a validation step, so that every run which
    took a step leaves a best.ckpt. It asks Lightning to stop (`trainer.should_stop`) at that step, and Lightning
    validates before stopping; runs ended by max_time validate the same way. Epoch-based runs whose last epoch is
    not a validation epoch (`check_val_every_n_epoch`) are left as configured."""

    def __init__(self):
        self._validated = False

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._validated = False

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._validated = True

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        if self._validated or trainer.fast_dev_run:
            return
        last_step = 0 < trainer.max_steps <= trainer.global_step
        last_epoch = trainer.max_epochs is not None and 0 < trainer.max_epochs <= trainer.current_epoch + 1
        if last_step or (last_epoch and trainer.fit_loop.epoch_loop.batch_progress.is_last_batch):
            trainer.should_stop = True


class RNGState(Callback):
    """Stores the Python, NumPy and torch random states in checkpoints and restores them when training resumes, so
    shuffling, augmentation and dropout continue as if training had never stopped. Exact with num_workers=0, from
    mid-epoch checkpoints too (the training loader keeps its place: `data.sampler`); DataLoader workers keep their own
    streams. The states are put back at `on_train_start`, after Lightning's setup has drawn its own random numbers
    (building the optimizer probes the training DataLoader). In multi-process runs every rank restores rank 0's
    state."""

    def __init__(self):
        self._pending: dict | None = None

    def state_dict(self) -> dict:
        name, keys, position, has_gauss, gauss = np.random.get_state()
        return {
            "python": random.getstate(),
            "numpy": (name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def load_state_dict(self, state: dict) -> None:
        self._pending = state

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._pending is None:
            return
        state, self._pending = self._pending, None
        random.setstate(state["python"])
        name, keys, position, has_gauss, gauss = state["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
        torch.set_rng_state(state["torch"])
        if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])


class InterruptCheckpoint(Callback):
    """`<root>/checkpoints/last.ckpt` of the current step when `fit` is stopped by SIGTERM or SIGINT (Ctrl+C), and
    every `every_minutes` of training (0: never), so that a run killed outright (SIGKILL) loses at most that much.

    From the sanity check on, this callback's handlers take SIGTERM and SIGINT: they note the signal, and the batch
    under way finishes. At the end of each training batch the ranks agree (one all-reduce with DDP: any rank's signal
    or due time counts for all), all take part in `trainer.save_checkpoint` (rank 0 writes, through the strategy's
    CheckpointIO: atomically with `AtomicCheckpointIO`), and on a signal the callback raises Lightning's
    `SIGTERMException` with exit status 128 + the signal (143 SIGTERM, 130 SIGINT); rank 0 prints where the file is.
    A second SIGINT interrupts at once (the handler that was there before: KeyboardInterrupt).
    Single-process, a SIGTERM also goes on to the handler it replaced (Lightning's, which chains to any earlier one and
    stops validation at its next batch). Under DDP it does not: Lightning 2.6's handler broadcasts from inside the
    signal handler, which collides with the collective the rank is in (gloo: "collective mismatch", the run crashes).
    The handlers are put back when training ends or fails; SIGUSR1 (SLURM auto-requeue) is left to Lightning.
    """

    def __init__(self, dirpath: str | Path, every_minutes: float = LAST_EVERY_MINUTES):
        if every_minutes < 0:
            raise ValueError(f"every_minutes is {every_minutes}, expected >= 0 (0: only when interrupted)")
        self.path = Path(dirpath) / LAST_NAME
        self.every_minutes = every_minutes
        self._signal: int | None = None  # the first SIGTERM / SIGINT received
        self._previous: dict[int, object] = {}  # signal -> the handler ours replaced, while ours are installed
        self._chain_sigterm = True  # single process: SIGTERM goes on to the previous handler
        self._training = False  # training has started: the state is this run's (restored, if resuming)
        self._last_save = 0.0  # time.monotonic() at the training start or the last periodic save

    def on_sanity_check_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._install(trainer)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._install(trainer)
        self._training = not trainer.fast_dev_run
        self._last_save = time.monotonic()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        if not self._training:
            return
        due = self.every_minutes > 0 and time.monotonic() - self._last_save >= 60.0 * self.every_minutes
        stop, due = self._agree(trainer, self._signal is not None, due)
        if stop:
            raise SIGTERMException  # on_exception saves last.ckpt and sets the exit status
        if due:
            trainer.save_checkpoint(self.path, weights_only=False)
            self._last_save = time.monotonic()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._training and self._agree(trainer, self._signal is not None, False)[0]:
            raise SIGTERMException  # a signal after the last batch (e.g. in the last validation): still a stop

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._restore()
        if not isinstance(exception, SIGTERMException):
            return
        signum = self._signal or signal.SIGTERM
        exception.code = 128 + signum
        if trainer.state.fn != TrainerFn.FITTING:
            return  # validate / test: nothing to save
        if self._training:
            trainer.save_checkpoint(self.path, weights_only=False)
            outcome = (f"saved step {trainer.global_step} to {self.path}; run the same command with "
                       "`--ckpt_path last` to continue from there.")
        else:
            outcome = "training had not started, so no checkpoint was written."
        if trainer.is_global_zero:
            print(f"handmesh: stopped by {signal.Signals(signum).name}: {outcome}", file=sys.stderr, flush=True)
        self._training = False

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._restore()
        self._training = False

    @staticmethod
    def _agree(trainer: pl.Trainer, stop: bool, due: bool) -> tuple[bool, bool]:
        """(stop, due) for all ranks: true where any rank's is."""
        if trainer.world_size == 1:
            return stop, due
        flags = torch.tensor([stop, due], dtype=torch.int32, device=trainer.strategy.root_device)
        stop, due = trainer.strategy.reduce(flags, reduce_op="max").tolist()
        return bool(stop), bool(due)

    def _install(self, trainer: pl.Trainer) -> None:
        if self._previous or threading.current_thread() is not threading.main_thread():
            return  # installed already, or not in the main thread (where Python runs signal handlers)
        self._signal = None
        self._is_global_zero = trainer.is_global_zero
        self._chain_sigterm = trainer.world_size == 1
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._previous[signum] = signal.signal(signum, self._on_signal)

    def _restore(self) -> None:
        for signum, previous in self._previous.items():
            if signal.getsignal(signum) == self._on_signal:
                signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self._previous = {}

    def _on_signal(self, signum: int, frame) -> None:
        previous = self._previous.get(signum, signal.SIG_DFL)
        if signum == signal.SIGINT and self._signal is not None:  # a second Ctrl+C: stop at once
            self._restore()
            if callable(previous):
                previous(signum, frame)
            elif previous != signal.SIG_IGN:
                raise KeyboardInterrupt
            return
        if self._signal is None:
            self._signal = signum
            if self._is_global_zero:
                print(f"\nhandmesh: {signal.Signals(signum).name}: stopping after this batch and saving last.ckpt"
                      f"{' (Ctrl+C again to stop at once)' if signum == signal.SIGINT else ''}",
                      file=sys.stderr, flush=True)
        if signum == signal.SIGTERM and self._chain_sigterm and callable(previous):
            previous(signum, frame)


def default_callbacks(root_dir: str | Path, last_every_minutes: float = LAST_EVERY_MINUTES) -> list[Callback]:
    """Best and last checkpoints in `<root_dir>/checkpoints/`, last.ckpt also on SIGTERM / SIGINT and every
    `last_every_minutes` of training (0: only then), a validation before the end of a run that has not validated,
    and the random states for an exact resume; progress as lines when stdout is not a terminal."""
    checkpoints = BestAndLastCheckpoint(root_dir)
    return [checkpoints, InterruptCheckpoint(checkpoints.dirpath, last_every_minutes), ValidateBeforeEnd(), RNGState(),
            ProgressLines()]


class ValidationMeshImages(Callback):
    """Logs the first `num_images` validation crops with the predicted mesh drawn over them, once per validation, to
    TensorBoard (`val/mesh_overlay`). Uses pyrender (EGL); without OpenGL it warns once and draws with OpenCV."""

    def __init__(self, num_images: int = 4):
        self.num_images = num_images
        self._renderer: MeshRenderer | None = None
        self._use_opencv = False

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        if batch_idx != 0 or trainer.sanity_checking or not trainer.is_global_zero or self.num_images <= 0:
            return
        loggers = [logger for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)]
        if not loggers or not isinstance(outputs, dict) or "vertices" not in outputs:
            return
        count = min(self.num_images, batch["image"].shape[0])
        images = np.ascontiguousarray(batch["image"][:count].permute(0, 2, 3, 1).cpu().numpy())  # (n, S, S, 3) uint8
        K = batch["K"][:count].float().cpu().numpy()  # (n, 3, 3)
        vertices = outputs["vertices"][:count].float().cpu().numpy()  # (n, 778, 3) camera frame
        faces = pl_module.model.mano.faces.cpu().numpy()
        panels = [self._draw(images[i], vertices[i], faces, K[i]) for i in range(count)]
        loggers[0].experiment.add_image("val/mesh_overlay", np.concatenate(panels, axis=1), trainer.global_step,
                                        dataformats="HWC")

    def _draw(self, image: np.ndarray, vertices: np.ndarray, faces: np.ndarray, K: np.ndarray) -> np.ndarray:
        height, width = image.shape[:2]
        stale = self._renderer is None or (self._renderer.width, self._renderer.height) != (width, height)
        if not self._use_opencv and stale:
            self.teardown_renderer()
            try:
                self._renderer = MeshRenderer(width, height)
            except RendererUnavailable as error:
                warnings.warn(f"validation images drawn with OpenCV instead of OpenGL: {error}", stacklevel=2)
                self._use_opencv = True
        if self._use_opencv:
            return render_mesh_opencv(image, vertices, faces, K)
        return overlay(image, self._renderer.render([(vertices, faces)], K))

    def teardown_renderer(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.teardown_renderer()
