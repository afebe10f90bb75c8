"""handmesh.progress: a bounded number of whole lines when stderr is a file, a live tqdm bar on a terminal."""

from __future__ import annotations

import io
import subprocess
import sys

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset
from tqdm import tqdm

from handmesh.lightning_progress import ProgressLines
from handmesh.progress import LineProgress, progress_bar

SCRIPT = """
from handmesh.progress import progress_bar
for _ in progress_bar(range(20000), desc="work", mininterval=0):
    pass
with progress_bar(total=5000, desc="manual", unit="sample", mininterval=0) as bar:
    for _ in range(5000):
        bar.update(1)
"""


def test_stderr_to_a_file_gets_a_line_every_tenth_and_no_redraws(tmp_path):
    log = tmp_path / "log.txt"
    with open(log, "w") as stderr:
        subprocess.run([sys.executable, "-c", SCRIPT], stderr=stderr, check=True, timeout=120)
    text = log.read_text()
    assert "\r" not in text
    lines = text.splitlines()
    work = [line for line in lines if line.startswith("work:")]
    manual = [line for line in lines if line.startswith("manual:")]
    assert len(work) + len(manual) == len(lines)
    # a line at each tenth (fast loops: the 30 s lines never come); the last one says 100 %
    assert len(work) == 10 and len(manual) == 10, text
    assert work[-1].startswith("work: 100% 20000/20000") and manual[-1].startswith("manual: 100% 5000/5000")
    assert work[0].startswith("work:  10% 2000/20000")


def test_unknown_total_and_early_stop_write_one_final_line():
    stream = io.StringIO()
    with progress_bar(total=None, desc="stream", file=stream, every_s=3600.0, mininterval=0) as bar:
        for _ in range(100):
            bar.update(1)
    assert stream.getvalue().splitlines() == [stream.getvalue().strip()] and "stream: 100" in stream.getvalue()
    stopped = io.StringIO()
    with progress_bar(total=1000, desc="stopped", file=stopped, mininterval=0) as bar:
        bar.update(150)
        bar.update(5)  # stopped at 15.5 %: a line at 10 % (when 150 came in) and one at the end
    assert [line.split("%")[0] for line in stopped.getvalue().splitlines()] == ["stopped:  15", "stopped:  16"]


def test_seconds_bound_the_silence_when_the_fraction_moves_slowly():
    stream = io.StringIO()
    with progress_bar(total=10**6, desc="slow", file=stream, every_s=0.0, mininterval=0) as bar:
        bar.update(1)
        bar.update(1)
    assert len(stream.getvalue().splitlines()) == 2  # every display is due at every_s=0; no extra line at the end


def test_a_terminal_gets_tqdm_and_disable_writes_nothing():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    bar = progress_bar(total=3, file=Terminal())
    assert type(bar) is tqdm
    bar.close()
    stream = io.StringIO()
    quiet = progress_bar(range(10), file=stream, disable=True)
    assert isinstance(quiet, LineProgress) and list(quiet) == list(range(10))
    quiet.close()
    assert stream.getvalue() == ""


class _Tiny(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        loss = self.layer(batch[0]).square().mean()
        self.log("loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val/error", self.layer(batch[0]).abs().mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _fit(tmp_path, **trainer_args):
    loader = DataLoader(TensorDataset(torch.randn(40, 2)), batch_size=2)  # 20 steps an epoch
    trainer = pl.Trainer(max_steps=60, val_check_interval=20, limit_val_batches=2, callbacks=[ProgressLines()],
                         logger=False, enable_checkpointing=False, enable_model_summary=False,
                         default_root_dir=tmp_path, **trainer_args)
    trainer.fit(_Tiny(), loader, loader)
    return trainer


def test_lightning_bar_becomes_lines_when_stdout_is_not_a_terminal(tmp_path, capsys):
    trainer = _fit(tmp_path)
    out = capsys.readouterr().out
    assert trainer.progress_bar_callback is not None and not trainer.progress_bar_callback.is_enabled
    assert "\r" not in out and "\x1b" not in out  # no redraws, no terminal control codes
    lines = out.splitlines()
    train = [line for line in lines if line.startswith("train:")]
    validation = [line for line in lines if line.startswith("validation at step")]
    assert 1 <= len(train) <= 11 and train[-1].startswith("train: 100% 60/60"), out
    assert [line.split(" (")[0] for line in validation] == ["validation at step 20", "validation at step 40",
                                                            "validation at step 60"], out
    assert "val/error" in validation[0]


def test_lightning_without_a_progress_bar_stays_silent(tmp_path, capsys):
    _fit(tmp_path, enable_progress_bar=False)
    out = capsys.readouterr().out
    assert "train:" not in out and "validation at step" not in out


def test_a_job_shorter_than_delay_writes_nothing():
    stream = io.StringIO()
    with progress_bar(total=10, desc="quick", file=stream, delay=3600.0, mininterval=0) as bar:
        for _ in range(10):
            bar.update(1)
    assert stream.getvalue() == ""
    with progress_bar(total=10, desc="slow", file=stream, delay=0.0, mininterval=0) as bar:
        for _ in range(10):
            bar.update(1)
    assert stream.getvalue().count("\n") >= 1
