"""`handmesh fit | validate | test` through LightningCLI: both configs run, overrides merge, bad input exits 2 with a
clear message, and `--ckpt_path last` resumes exactly."""

from __future__ import annotations

import os
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import yaml

from handmesh.cli import main

from tiny_synth import tiny_synthetic_set

torch.set_num_threads(2)
QUICKSTART = "configs/quickstart.yaml"
REPO = Path(__file__).resolve().parents[1]
MA36 = "configs/freihand_fastvit_ma36.yaml"


@pytest.fixture(scope="module")
def root(pytestconfig, tmp_path_factory):
    return tiny_synthetic_set(pytestconfig, tmp_path_factory)


def _tiny(root, run_dir, *extra) -> list[str]:
    """Overrides that make a config tiny: the test data, small crops and batches, no workers, a temporary run folder."""
    return ["--data.root", str(root), "--data.batch_size", "4", "--data.num_workers", "0", "--model.input_size", "64",
            "--trainer.default_root_dir", str(run_dir), "--trainer.logger", "false", "--trainer.callbacks", "[]",
            *extra]


class StopAfterEpochs(pl.Callback):
    """Ends training (gracefully) after `epochs` epochs: an interrupted run, for the resume test."""

    def __init__(self, epochs: int = 1):
        self.epochs = epochs

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch + 1 >= self.epochs:
            trainer.should_stop = True


def test_quickstart_fast_dev_run(root, tmp_path):
    assert main(["fit", "--config", QUICKSTART, *_tiny(root, tmp_path), "--trainer.fast_dev_run", "1"]) == 0
    assert not (tmp_path / "checkpoints").exists()  # fast_dev_run writes no checkpoint


@pytest.mark.slow
def test_ma36_fast_dev_run_with_a_small_input(root, tmp_path):
    args = ["fit", "--config", MA36, *_tiny(root, tmp_path), "--model.pretrained", "null", "--trainer.precision",
            "32-true", "--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.fast_dev_run", "1"]
    assert main(args) == 0


def test_a_short_run_leaves_best_last_and_logs_in_its_run_folder(root, tmp_path, monkeypatch, capsys):
    """Run from outside the repository: the loggers follow default_root_dir, and a run that stops before its first
    scheduled validation (975) validates at its last step, so best.ckpt exists."""
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    args = _tiny(root, run, "--trainer.max_steps", "3", "--model.warmup_steps", "1")
    args = [a for a in args if a not in ("--trainer.logger", "false")]  # the config's TensorBoard and CSV loggers
    assert main(["fit", "--config", str(REPO / QUICKSTART), *args]) == 0
    assert (run / "checkpoints" / "best.ckpt").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    assert torch.load(run / "checkpoints" / "best.ckpt", weights_only=True)["global_step"] == 3
    assert list((run / "tensorboard").glob("version_0/events.*"))
    assert (run / "csv" / "version_0" / "metrics.csv").is_file()
    assert not (tmp_path / "runs").exists()
    err = capsys.readouterr().err
    assert f"checkpoints in {run / 'checkpoints'}" in err and str(run / "csv" / "version_0") in err


def test_print_config_shows_merged_overrides(root, tmp_path, capsys):
    code = main(["fit", "--config", QUICKSTART, "--data.root", "/some/where", "--data.batch_size", "3",
                 "--mano-dir", str(tmp_path), "--model.input_size", "96", "--print_config"])
    assert code == 0
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["data"]["root"] == "/some/where" and config["data"]["batch_size"] == 3
    assert config["model"]["mano_dir"] == str(tmp_path)
    assert config["model"]["encoder"] == "fastvit_t8"
    assert config["model"]["input_size"] == 96 and "input_size" not in config["data"]  # data's is linked to it
    assert config["model"]["loss_weights"]["keypoints_3d"] == 5.0  # defaults from the code appear too


def test_unknown_config_key_exits_2(capsys):
    assert main(["fit", "--config", QUICKSTART, "--model.no_such_option", "1"]) == 2
    assert "no_such_option" in capsys.readouterr().err


def test_missing_data_root_exits_2_with_a_message(tmp_path, capsys):
    code = main(["fit", "--config", QUICKSTART, *_tiny(tmp_path / "nowhere", tmp_path), "--trainer.fast_dev_run", "1"])
    assert code == 2
    err = capsys.readouterr().err
    assert "handmesh fit: error:" in err and "nowhere" in err and "Traceback" not in err


def test_missing_mano_dir_exits_2_with_a_message(root, tmp_path, capsys):
    code = main(["fit", "--config", QUICKSTART, *_tiny(root, tmp_path), "--mano-dir", str(tmp_path / "no_mano"),
                 "--trainer.fast_dev_run", "1"])
    assert code == 2
    err = capsys.readouterr().err
    assert "MANO_RIGHT.pkl" in err and "Traceback" not in err


@pytest.mark.parametrize("kind", ["corrupt", "foreign", "unsafe"])
def test_bad_checkpoint_exits_2_with_a_message(root, tmp_path, capsys, kind):
    path = tmp_path / "bad.ckpt"
    if kind == "corrupt":
        path.write_bytes(b"PK\x03\x04 truncated zip")
    elif kind == "foreign":
        torch.save({"state_dict": {"layer.weight": torch.zeros(2)}, "epoch": 3}, path)
    else:
        path.write_bytes(pickle.dumps({"state_dict": {}, "payload": pl.Callback()}, protocol=2))
    code = main(["validate", "--config", QUICKSTART, *_tiny(root, tmp_path), "--ckpt_path", str(path)])
    assert code == 2
    err = capsys.readouterr().err
    expected = {"corrupt": "not a readable checkpoint", "foreign": "another program",
                "unsafe": "refusing to load .*pytorch_lightning.callbacks.callback.Callback"}[kind]
    assert re.search(expected, err) and "Traceback" not in err


def test_a_checkpoint_folder_lists_its_ckpt_files(root, tmp_path, capsys):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "best.ckpt").write_bytes(b"")
    assert main(["validate", "--config", QUICKSTART, *_tiny(root, tmp_path), "--ckpt_path", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "is a folder" in err and str(tmp_path / "checkpoints" / "best.ckpt") in err and "Traceback" not in err


@pytest.mark.slow
def test_resume_from_last_is_exact(root, tmp_path):
    """Two epochs straight == one epoch, stop, `--ckpt_path last`, one more epoch: same weights to the bit."""
    common = ["--config", QUICKSTART, "--trainer.max_steps", "14", "--trainer.val_check_interval", "null",
              "--trainer.check_val_every_n_epoch", "1", "--model.warmup_steps", "3", "--data.batch_size", "4"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert main(["fit", *common, *_tiny(root, straight)]) == 0
    stop = '[{"class_path": "test_cli_lightning.StopAfterEpochs", "init_args": {"epochs": 1}}]'
    assert main(["fit", *common, *_tiny(root, resumed), "--trainer.callbacks", stop]) == 0
    assert torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 7
    assert main(["fit", *common, *_tiny(root, resumed), "--ckpt_path", "last"]) == 0
    a = torch.load(straight / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=True)
    assert a["global_step"] == b["global_step"] == 14
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    assert (straight / "checkpoints" / "best.ckpt").is_file()


def test_a_corrupt_jpeg_read_by_a_worker_ends_fit_with_one_error_line(root, tmp_path):
    """A subprocess, as users run it: Lightning's own log lines come first, then the worker's message, exit 2."""
    data = tmp_path / "data"
    shutil.copytree(root, data, ignore=shutil.ignore_patterns("*.npy"))
    bad = data / "training" / "rgb" / "00000005.jpg"
    bad.write_bytes(b"not a JPEG: the download was cut here")
    args = ["fit", "--config", QUICKSTART, *_tiny(data, tmp_path / "run"), "--data.num_workers", "2",
            "--trainer.max_steps", "20"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-m", "handmesh.cli", *args], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "DataLoader worker" not in result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"handmesh fit: error: image {bad} cannot be decoded as an image; expected a JPEG. Re-extract the dataset, or "
        "pass on_bad_image='skip' to skip such images (they are counted and warned about).")
