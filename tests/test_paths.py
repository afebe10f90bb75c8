"""Repository defaults resolve against the checkout, not the current folder: run from a folder outside it."""

from __future__ import annotations

from pathlib import Path

import pytest

from handmesh.cli import main
from handmesh.commands.lightning import expand_aliases
from handmesh.mano_file import DEFAULT_MANO_DIR, DEFAULT_STANDIN_DIR
from handmesh.paths import REPO_ROOT, here_or_in_repo

from tiny_synth import tiny_synthetic_set

REPO = Path(__file__).resolve().parents[1]


def test_here_or_in_repo(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert REPO_ROOT == REPO
    assert here_or_in_repo("configs/quickstart.yaml") == REPO / "configs" / "quickstart.yaml"
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "quickstart.yaml").write_text("seed_everything: 1\n")  # the user's own file wins
    assert here_or_in_repo("configs/quickstart.yaml") == tmp_path / "configs" / "quickstart.yaml"
    assert here_or_in_repo("nowhere/x.yaml") == tmp_path / "nowhere" / "x.yaml"  # absolute, for the message


def test_hand_model_defaults_are_the_checkouts():
    assert DEFAULT_MANO_DIR == REPO / "data" / "mano" and DEFAULT_STANDIN_DIR == REPO / "data" / "mano_standin"


def test_config_and_aliases_from_another_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    expanded = expand_aliases(["--config", "configs/quickstart.yaml", "--data-root", "d", "--batch-size=3",
                               "--config=configs/freihand_fastvit_ma36.yaml"])
    assert expanded == ["--config", str(REPO / "configs" / "quickstart.yaml"), "--data.root", "d",
                        "--data.batch_size=3", "--config=" + str(REPO / "configs" / "freihand_fastvit_ma36.yaml")]
    assert str(REPO / "configs" / "quickstart.yaml") in capsys.readouterr().err


def test_fit_with_the_documented_relative_config_runs_from_another_folder(pytestconfig, tmp_path_factory, tmp_path,
                                                                          monkeypatch, capsys):
    root = tiny_synthetic_set(pytestconfig, tmp_path_factory)
    # in pytest's cache inside the checkout (the usual case), the data folder is named relative to the checkout
    data = root.relative_to(REPO) if root.is_relative_to(REPO) else root
    monkeypatch.chdir(tmp_path)
    assert main(["fit", "--config", "configs/quickstart.yaml", "--data-root", str(data), "--data.num_workers", "0",
                 "--batch-size", "4", "--model.input_size", "64", "--trainer.logger", "false",
                 "--trainer.default_root_dir", "run", "--trainer.fast_dev_run", "1"]) == 0
    assert not (tmp_path / "runs").exists()
    err = capsys.readouterr().err
    assert str(REPO / "configs" / "quickstart.yaml") in err and (data == root or f"data {root}" in err)


def test_synth_defaults_to_the_checkouts_data_folder(capsys):
    with pytest.raises(SystemExit):
        main(["synth", "--help"])
    help_text = "".join(capsys.readouterr().out.split())  # argparse wraps long paths
    assert str(REPO / "data" / "synthetic_freihand") in help_text
