"""Lightning's progress that suits where it goes: its own bar on a terminal, plain lines in a log file or CI.

`ProgressLines` is one of `handmesh.callbacks.default_callbacks`. When the trainer has Lightning's own bar (the default
with `enable_progress_bar: true`) and stdout, where that bar draws, is not a terminal, it disables the bar and writes
instead a line each time another tenth of the training steps is done or LINE_EVERY_S seconds have passed
(`handmesh.progress.LineProgress`), and one line of scores after each validation. With `enable_progress_bar: false`,
a progress bar callback of the user's own class, or on a terminal it does nothing.
"""

from __future__ import annotations

import math
import sys

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback, RichProgressBar, TQDMProgressBar

from handmesh.progress import LINE_EVERY_S, LineProgress, is_terminal

LIGHTNING_BARS = (TQDMProgressBar, RichProgressBar)  # the bars Lightning adds by default (Rich when installed)


class ProgressLines(Callback):
    """Replaces Lightning's bar redraws by whole lines when stdout is not a terminal (see the module's doc)."""

    def __init__(self, every_s: float = LINE_EVERY_S):
        self.every_s = every_s
        self._active = False
        self._line: LineProgress | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        bar = trainer.progress_bar_callback
        self._active = (type(bar) in LIGHTNING_BARS and bar.is_enabled and trainer.is_global_zero
                        and not is_terminal(sys.stdout))
        if self._active:
            bar.disable()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._active:
            total = trainer.estimated_stepping_batches
            self._line = LineProgress(total=int(total) if math.isfinite(total) else None, initial=trainer.global_step,
                                      desc="train", unit="step", file=sys.stdout, every_s=self.every_s)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        if self._line is not None:
            metrics = trainer.progress_bar_callback.get_metrics(trainer, pl_module)
            self._line.set_postfix({"epoch": trainer.current_epoch, **metrics}, refresh=False)
            self._line.update(trainer.global_step - self._line.n)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._active or trainer.sanity_checking:
            return
        scores = ", ".join(f"{name} {float(value):.4g}" for name, value in trainer.callback_metrics.items()
                           if name.startswith("val") and getattr(value, "numel", lambda: 1)() == 1)
        print(f"validation at step {trainer.global_step} (epoch {trainer.current_epoch}): {scores or 'no scores'}",
              file=sys.stdout, flush=True)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._close()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._close()

    def _close(self) -> None:
        if self._line is not None:
            self._line.close()
            self._line = None
