"""The quick start's main job end to end at toy scale: synth -> fit -> predict -> evaluate -> baseline -> overlays."""

from __future__ import annotations

import json

import pytest

from handmesh.quickstart import main

SCORE_KEYS = {"pa_mpjpe_mm", "pa_mpvpe_mm", "mpjpe_mm", "mpvpe_mm", "f5", "f15", "f5_unaligned", "f15_unaligned",
              "auc_pa_joints", "auc_pa_verts", "auc_joints", "auc_verts"}


@pytest.mark.slow
def test_quickstart_end_to_end(tmp_path, capsys):
    from handmesh.standin import write_standin

    write_standin(tmp_path / "standin", progress=False)
    out = tmp_path / "run"
    argv = ["--out", str(out), "--data-root", str(tmp_path / "synth"), "--train", "12", "--eval", "6",
            "--mano-dir", str(tmp_path / "standin"), "--overlays", "2", "--fit-args", "--trainer.max_steps", "3",
            "--trainer.val_check_interval", "3", "--data.batch_size", "4", "--data.num_workers", "0",
            "--trainer.max_time", "null"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "stand-in" in printed.lower() and "mean pose baseline" in printed
    for name in ("model.ckpt", "scores.json", "mean_pose_scores.json", "pred.json", "pred.json.meta.json",
                 "per_sample.csv"):
        assert (out / name).is_file(), name
    scores = json.loads((out / "scores.json").read_text())
    baseline = json.loads((out / "mean_pose_scores.json").read_text())
    assert set(scores) == SCORE_KEYS and set(baseline) == SCORE_KEYS
    assert 0 < baseline["pa_mpjpe_mm"] < 100  # a hand-sized error in millimetres
    assert len(list((out / "overlays").glob("*.png"))) == 2
    summary = json.loads((out / "summary.json").read_text())
    assert summary["synthetic_data"] is True and "STAND-IN" in summary["hand_model"]
    meta = json.loads((out / "pred.json.meta.json").read_text())
    assert meta["is_standin"] is True and meta["checkpoint"] == str(out / "model.ckpt")

    # A second run reuses the synthetic set and trains afresh (the first run finished).
    assert main(argv) == 0
    assert "reusing it" in capsys.readouterr().out
