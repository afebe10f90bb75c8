"""The `handmesh` command's small frictions: fast --help (no torch before parsing), "did you mean" for a mistyped
command, one-line errors for bad values."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from handmesh.cli import COMMANDS, PASSTHROUGH, main

REPO = Path(__file__).resolve().parents[1]
OWN = ["standin", "render-hand", "synth", "view", "predict", "evaluate", "bench"]  # argparse commands owned here


@pytest.mark.parametrize("command", OWN)
def test_help_imports_no_torch(command, tmp_path):
    """`handmesh CMD --help` run from outside the repository prints the help without importing torch (which is what
    made it take seconds)."""
    code = ("import sys; from handmesh.cli import main\n"
            f"try:\n    main([{command!r}, '--help'])\nexcept SystemExit as stop:\n    rc = stop.code\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', rc)")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert f"usage: handmesh {command}" in done.stdout
    assert done.stdout.strip().endswith("NO-TORCH 0"), done.stdout[-300:] + done.stderr[-2000:]


def test_a_mistyped_command_gets_a_suggestion(capsys):
    assert main(["predcit"]) == 2
    err = capsys.readouterr().err
    assert "did you mean predict?" in err and len(err.splitlines()) == 1


def test_an_unknown_command_without_a_close_match_lists_them(capsys):
    assert main(["zzz"]) == 2
    err = capsys.readouterr().err
    assert "did you mean" not in err and all(name in err for name in COMMANDS)


def test_top_level_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in COMMANDS) and PASSTHROUGH <= set(COMMANDS)


def test_an_unknown_pose_is_one_line(tmp_path, capsys):
    assert main(["render-hand", "--pose", "wave", "--out", str(tmp_path / "h.png")]) == 2
    err = capsys.readouterr().err
    assert "flat, fist, pinch, point, random" in err and not (tmp_path / "h.png").exists()


def test_the_stand_in_notice_is_one_short_line_and_verbose_adds_how_to_get_mano(standin_dir, tmp_path, monkeypatch):
    from handmesh.cli_values import VERBOSE_ENV
    from handmesh.mano_file import HOW_TO_GET_MANO, resolve_mano_dir

    monkeypatch.delenv("HANDMESH_MANO_DIR", raising=False)
    source = resolve_mano_dir(None, default_dir=tmp_path / "no_mano", standin_dir=standin_dir)
    monkeypatch.setenv(VERBOSE_ENV, "0")  # restored (unset) after the test
    short = source.describe()
    assert "STAND-IN" in short and str(tmp_path / "no_mano") in short and "-v" in short
    paths = len(str(source.directory)) + len(str(tmp_path / "no_mano"))
    assert HOW_TO_GET_MANO not in short and "\n" not in short and len(short) - paths < 150
    monkeypatch.setenv(VERBOSE_ENV, "1")
    assert HOW_TO_GET_MANO in source.describe()


def test_dash_v_before_a_command_reaches_its_messages(tmp_path, monkeypatch, capsys):
    from handmesh.cli_values import VERBOSE_ENV

    monkeypatch.setenv(VERBOSE_ENV, "0")  # restored (unset) after the test
    assert main(["-v", "render-hand", "--pose", "wave", "--out", str(tmp_path / "h.png")]) == 2
    assert os.environ.get(VERBOSE_ENV) == "1"


def test_lightning_help_comes_from_the_cache_the_first_call_filled(tmp_path):
    """`handmesh fit --help` builds its text once (Lightning, torch); the next call prints the same text from
    user_cache_dir()/help without importing torch."""
    code = ("import sys; from handmesh.cli import main\n"
            "rc = main(['fit', '--help'])\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', rc)")
    env = {**os.environ, "PYTHONPATH": str(REPO), "XDG_CACHE_HOME": str(tmp_path / "cache"), "COLUMNS": "100"}
    env_narrow = {**env, "COLUMNS": "60"}  # another terminal width: the same text, from the cache
    runs = [subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=environment, capture_output=True,
                           text=True, timeout=300) for environment in (env, env_narrow)]
    first, second = (done.stdout.strip().rsplit("\n", 1) for done in runs)
    assert "--trainer.max_steps" in first[0] and first[1] == "TORCH 0", runs[0].stderr[-2000:]
    assert second == [first[0], "NO-TORCH 0"], runs[1].stderr[-2000:]
    assert len(list((tmp_path / "cache" / "handmesh" / "help").glob("fit-*.txt"))) == 1


def test_help_cache_keys_on_the_command_line_and_the_code(tmp_path, monkeypatch, capsys):
    from handmesh import help_cache

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    package = tmp_path / "package"
    package.mkdir()
    (package / "module.py").write_text("x = 1\n")
    monkeypatch.setattr(help_cache, "PACKAGE", package)
    builds = []

    def build(text: str, status: int = 0):
        def printer() -> int:
            builds.append(text)
            print(text)
            return status
        return printer

    assert help_cache.cached_help("fit", ["--help"], build("fit help")) == 0
    assert help_cache.cached_help("fit", ["--help"], build("not called")) == 0
    assert capsys.readouterr().out == "fit help\nfit help\n" and builds == ["fit help"]
    assert help_cache.cached_help("fit", ["-h"], build("short flag")) == 0  # another command line, its own entry
    os.utime(package / "module.py", ns=(0, 0))  # the code changed
    assert help_cache.cached_help("fit", ["--help"], build("new help")) == 0
    kept = sorted(path.name.rsplit("-", 1)[0] for path in (tmp_path / "cache" / "handmesh" / "help").iterdir())
    assert kept == ["fit-h", "fit-help"], "the build for the old code is replaced, the other flag's entry stays"
    assert help_cache.cached_help("test", ["--help"], build("failed", status=2)) == 2  # not kept
    assert help_cache.cached_help("test", ["--help"], build("test help")) == 0
    assert builds == ["fit help", "short flag", "new help", "failed", "test help"]
