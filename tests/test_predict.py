"""`handmesh predict` needs the evaluation images and evaluation_K.json only (as the official pred.py), and a bad image
read by a DataLoader worker is the same one-line error and exit status 2 as in the main process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from handmesh.cli import main
from handmesh.predjson import read_pred_json, read_pred_meta

from tiny_synth import tiny_checkpoint, tiny_synthetic_set

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def root(pytestconfig, tmp_path_factory):
    return tiny_synthetic_set(pytestconfig, tmp_path_factory)


@pytest.fixture(scope="module")
def checkpoint(root, tmp_path_factory):
    return tiny_checkpoint(root, tmp_path_factory.mktemp("run"))


def _evaluation_only(root: Path, target: Path) -> Path:
    """`evaluation/rgb/` and `evaluation_K.json` of `root`, nothing else."""
    (target / "evaluation").mkdir(parents=True)
    shutil.copytree(root / "evaluation" / "rgb", target / "evaluation" / "rgb")
    shutil.copy(root / "evaluation_K.json", target)
    return target


def test_images_and_K_are_enough_and_ground_truth_is_ignored(root, checkpoint, tmp_path):
    bare = _evaluation_only(root, tmp_path / "bare")
    full, only = tmp_path / "full.json", tmp_path / "only.json"
    for folder, out in [(root, full), (bare, only)]:
        assert main(["predict", "--checkpoint", str(checkpoint), "--data.root", str(folder), "--out", str(out),
                     "--num-workers", "0", "--batch-size", "3"]) == 0
    assert full.read_bytes() == only.read_bytes()
    assert sorted(path.name for path in bare.iterdir() if not path.name.endswith(".npy")) == [
        "evaluation", "evaluation_K.json"]


def test_missing_K_is_a_clear_error(root, checkpoint, tmp_path, capsys):
    bare = _evaluation_only(root, tmp_path / "bare")
    (bare / "evaluation_K.json").unlink()
    code = main(["predict", "--checkpoint", str(checkpoint), "--data.root", str(bare), "--out",
                 str(tmp_path / "p.json"), "--num-workers", "0"])
    assert code == 2
    assert "lacks evaluation_K.json" in capsys.readouterr().err
    assert not (tmp_path / "p.json").exists()


def test_a_corrupt_jpeg_read_by_a_worker_is_one_line_and_exit_2(root, checkpoint, tmp_path):
    bare = _evaluation_only(root, tmp_path / "bare")
    bad = bare / "evaluation" / "rgb" / "00000002.jpg"
    bad.write_bytes(b"not a JPEG: the download was cut here")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "handmesh.cli", "predict", "--checkpoint", str(checkpoint), "--data.root", str(bare),
         "--out", str(tmp_path / "p.json"), "--num-workers", "2", "--batch-size", "1"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"handmesh predict: error: image {bad} cannot be decoded as an image; expected a JPEG. Re-extract the "
        "dataset, or pass on_bad_image='skip' to skip such images (they are counted and warned about)."]
    assert not (tmp_path / "p.json").exists()


def test_an_existing_pred_json_is_replaced_only_with_overwrite(root, checkpoint, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # outside the repository; --data-root is --data.root's other spelling
    out = tmp_path / "pred.json"
    out.write_text("earlier work")
    args = ["predict", "--checkpoint", str(checkpoint), "--data-root", str(root), "--out", "pred.json",
            "--num-workers", "0"]
    assert main(args) == 2
    assert "--overwrite" in capsys.readouterr().err and out.read_text() == "earlier work"
    assert main([*args, "--overwrite"]) == 0
    assert out.read_text().startswith("[[[")


def test_pred_json_gets_a_sidecar_naming_the_hand_model_and_checkpoint(root, checkpoint, tmp_path, capsys):
    out = tmp_path / "pred.json"
    assert main(["predict", "--checkpoint", str(checkpoint), "--data-root", str(root), "--out", str(out),
                 "--num-workers", "0"]) == 0
    meta = read_pred_meta(out)
    assert meta is not None and (tmp_path / "pred.json.meta.json").is_file()
    assert meta["is_standin"] is True and "STAND-IN" in meta["hand_model"]  # the suite runs on the stand-in
    assert meta["checkpoint"] == str(Path(checkpoint).absolute()) and meta["samples"] == len(read_pred_json(out)[0])
    assert meta["written"].startswith("20") and "pred.json.meta.json" in capsys.readouterr().out
