"""`handmesh evaluate` end to end on a tiny generated FreiHAND-style folder, and every bad input it must refuse."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from handmesh import metrics_reference as reference
from handmesh.cli import main
from handmesh.errors import PredictionFileError
from handmesh.metrics import PER_SAMPLE_KEYS, SCORE_KEYS
from handmesh.predjson import _regular_arrays, read_pred_json, write_pred_json, write_pred_meta
from handmesh.scoring import evaluate as evaluate_files, pck_plot_png, provenance

torch.set_num_threads(1)
NUM = 5
REPO = Path(__file__).resolve().parents[1]


def make_arrays(seed: int = 0):
    """Ground truth and a noisy prediction, metres (float64): (NUM, 21, 3), (NUM, 778, 3) each."""
    rng = np.random.default_rng(seed)
    gt_xyz = rng.normal(size=(NUM, 21, 3)) * 0.04 + [0.0, 0.0, 0.6]
    gt_verts = rng.normal(size=(NUM, 778, 3)) * 0.04 + [0.0, 0.0, 0.6]
    noise = lambda shape: rng.normal(size=shape) * 0.008  # noqa: E731
    return gt_xyz, gt_verts, gt_xyz + noise(gt_xyz.shape), gt_verts + noise(gt_verts.shape)


@pytest.fixture
def folder(tmp_path: Path):
    """tmp_path/gt holds evaluation_xyz.json and evaluation_verts.json (stdlib json, as the dataset ships them)."""
    gt_xyz, gt_verts, pred_xyz, pred_verts = make_arrays()
    root = tmp_path / "gt"
    root.mkdir()
    (root / "evaluation_xyz.json").write_text(json.dumps(gt_xyz.tolist()))
    (root / "evaluation_verts.json").write_text(json.dumps(gt_verts.tolist()))
    return root, (gt_xyz, gt_verts, pred_xyz, pred_verts)


def write_raw(path: Path, payload) -> Path:
    path.write_text(payload if isinstance(payload, str) else json.dumps(payload))
    return path


def evaluate(root: Path, pred: Path, out: Path) -> int:
    return main(["evaluate", "--gt", str(root), "--pred", str(pred), "--out", str(out)])


def test_evaluate_writes_official_scores_csv_plot_and_table(folder, tmp_path, capsys):
    root, (gt_xyz, gt_verts, pred_xyz, pred_verts) = folder
    pred = write_raw(tmp_path / "pred.json", [pred_xyz.tolist(), pred_verts.tolist()])
    out = tmp_path / "out"
    assert evaluate(root, pred, out) == 0

    scores = json.loads((out / "scores.json").read_text())
    assert tuple(scores) == SCORE_KEYS
    expected = reference.evaluate_reference(gt_xyz, gt_verts, pred_xyz, pred_verts)
    for key in SCORE_KEYS:
        assert scores[key] == pytest.approx(expected[key], rel=1e-6), key

    with open(out / "per_sample.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert list(rows[0]) == ["index", *PER_SAMPLE_KEYS]
    assert [int(row["index"]) for row in rows] == list(range(NUM))
    aligned = reference.align_w_scale(gt_xyz[3], pred_xyz[3])
    assert float(rows[3]["pa_mpjpe_mm"]) == pytest.approx(np.linalg.norm(aligned - gt_xyz[3], axis=1).mean() * 1000,
                                                          rel=1e-5)
    png = (out / "pck_curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert not list(out.glob(".*tmp"))  # atomic writes leave no temporary files

    table = capsys.readouterr().out
    assert "aligned (PA)" in table and "unaligned" in table
    assert f"{scores['pa_mpjpe_mm']:.2f}" in table and f"{scores['f5']:.3f}" in table


def test_write_then_read_pred_json_round_trips_float32_and_torch(tmp_path):
    _, _, xyz, verts = make_arrays(1)
    path = write_pred_json(tmp_path / "sub" / "pred.json", torch.from_numpy(xyz).float(), verts.astype(np.float32))
    read_xyz, read_verts = read_pred_json(path)
    assert read_xyz.dtype == np.float64 and read_verts.shape == (NUM, 778, 3)
    # float32 is written with its shortest exact decimal, so it reads back as the same float32
    np.testing.assert_array_equal(read_xyz.astype(np.float32), xyz.astype(np.float32))
    np.testing.assert_array_equal(read_verts.astype(np.float32), verts.astype(np.float32))
    with pytest.raises(PredictionFileError, match="millimetres"):
        write_pred_json(tmp_path / "mm.json", xyz * 1000, verts * 1000)


def test_fast_json_path_reads_exactly_what_a_json_parser_reads_and_refuses_the_rest():
    _, _, xyz, verts = make_arrays(2)
    xyz[0, 0] = [0.0, -0.0, 1.0]  # integers, negative zero, exponents, blanks and line breaks as other writers do
    verts[1, 2] = [1e-5, -2.5e-7, 3.0]
    for text in (json.dumps([xyz.tolist(), verts.tolist()]), json.dumps([xyz.tolist(), verts.tolist()], indent=1),
                 json.dumps([xyz.tolist(), verts.tolist()]).replace("0.0,", "0,").replace("3.0]", "3]")):
        fast = _regular_arrays(text.encode(), lists=2)
        careful = [np.asarray(part, dtype=np.float64) for part in json.loads(text)]
        assert fast is not None and all(np.array_equal(a, b) for a, b in zip(fast, careful))
        assert all(np.array_equal(a, b) for a, b in zip(fast, (xyz, verts)))
    # the same number of brackets and numbers, but sample 3 has 20 keypoints and sample 4 has 22: not regular
    uneven = xyz.tolist()
    uneven[4].append(uneven[3].pop())
    refused = [json.dumps([uneven, verts.tolist()]), json.dumps([xyz.tolist(), verts.tolist()]).replace("]", " ]", 1),
               json.dumps([xyz.tolist(), verts.tolist()]).replace(",", ",,", 1),
               json.dumps([xyz.tolist(), verts.tolist()]).replace(",", " 1,", 1), json.dumps(xyz.tolist())]
    for text in refused[:1] + refused[2:]:
        assert _regular_arrays(text.encode(), lists=2) is None, text[:80]
    assert _regular_arrays(refused[1].encode(), lists=2) is not None  # a blank before a bracket is still JSON
    assert _regular_arrays(json.dumps(xyz.tolist()).encode(), lists=1)[0].shape == (NUM, 21, 3)


def test_meshes_with_other_vertex_counts_are_scored_with_a_note(folder, tmp_path, capsys):
    root, (_, _, pred_xyz, pred_verts) = folder
    pred = write_raw(tmp_path / "pred.json", [pred_xyz.tolist(), pred_verts[:, :600].tolist()])
    assert evaluate(root, pred, tmp_path / "out") == 0
    scores = json.loads((tmp_path / "out" / "scores.json").read_text())
    assert scores["pa_mpvpe_mm"] is None and scores["f15"] > 0
    assert "600 vertices" in capsys.readouterr().out


def bad_predictions(pred_xyz, pred_verts):
    """(name, file text or JSON-able payload, fragment the error must contain)."""
    xyz, verts = pred_xyz.tolist(), pred_verts.tolist()
    nan_verts = pred_verts.copy()
    nan_verts[2, 5, 1] = np.nan
    short = pred_xyz.copy().tolist()
    short[3] = short[3][:20]
    ragged = pred_verts.tolist()
    ragged[1] = ragged[1][:777]
    uneven_xyz = pred_xyz.tolist()
    uneven_xyz[4].append(uneven_xyz[3].pop())  # as many numbers and brackets as 5 x 21 x 3, unevenly nested
    text = json.dumps([xyz, verts])
    return [
        ("too few samples", [xyz[:-1], verts[:-1]], f"expected {NUM} predictions"),
        ("20 keypoints", [short, verts], "sample 3 is 20x3"),
        ("ragged vertices", [xyz, ragged], "sample 1 is 777x3"),
        ("2 columns", [pred_xyz[:, :, :2].tolist(), verts], "21x3"),
        ("NaN", json.dumps([xyz, nan_verts.tolist()]), "NaN"),
        ("millimetres", [(pred_xyz * 1000).tolist(), (pred_verts * 1000).tolist()], "divide by 1000"),
        ("truncated", text[: len(text) // 2], "truncated"),
        ("not the official layout", {"xyz": xyz, "verts": verts}, "[xyz_list, verts_list]"),
        ("only keypoints", xyz, "a list of 5 entries"),
        ("text entries", [xyz, [[["a", 0, 0]] * 778] * NUM], "not numbers"),
        ("flat vertices", [xyz, pred_verts.reshape(NUM, -1).tolist()], "a flat list of 2334 values"),
        ("uneven keypoints, same count", [uneven_xyz, verts], "sample 3 is 20x3"),
        ("overflowing number", text.replace(str(xyz[0][0][0]), "1e999", 1), "expected valid JSON"),
    ]


@pytest.mark.parametrize("case", range(13), ids=[case[0] for case in bad_predictions(*make_arrays()[2:])])
def test_bad_predictions_exit_2_with_a_clear_message(folder, tmp_path, capsys, case):
    root, (_, _, pred_xyz, pred_verts) = folder
    name, payload, fragment = bad_predictions(pred_xyz, pred_verts)[case]
    pred = write_raw(tmp_path / "pred.json", payload)
    assert evaluate(root, pred, tmp_path / "out") == 2
    error = capsys.readouterr().err
    assert fragment in error, error
    assert "Traceback" not in error and error.startswith("handmesh evaluate: error:")
    assert not (tmp_path / "out" / "scores.json").exists()


def test_missing_ground_truth_and_prediction_files_exit_2(folder, tmp_path, capsys):
    root, (_, _, pred_xyz, pred_verts) = folder
    pred = write_raw(tmp_path / "pred.json", [pred_xyz.tolist(), pred_verts.tolist()])
    assert evaluate(tmp_path / "nowhere", pred, tmp_path / "out") == 2
    assert "no such folder" in capsys.readouterr().err
    assert evaluate(root, tmp_path / "absent.json", tmp_path / "out") == 2
    assert "expected a JSON file" in capsys.readouterr().err
    (root / "evaluation_verts.json").unlink()
    assert evaluate(root, pred, tmp_path / "out") == 2
    assert "expected evaluation_verts.json" in capsys.readouterr().err


def test_ground_truth_in_millimetres_or_wrong_shape_is_refused(folder, tmp_path, capsys):
    root, (gt_xyz, _, pred_xyz, pred_verts) = folder
    pred = write_raw(tmp_path / "pred.json", [pred_xyz.tolist(), pred_verts.tolist()])
    (root / "evaluation_xyz.json").write_text(json.dumps((gt_xyz * 1000).tolist()))
    assert evaluate(root, pred, tmp_path / "out") == 2
    assert "millimetres" in capsys.readouterr().err
    (root / "evaluation_xyz.json").write_text(json.dumps(gt_xyz.tolist()))
    (root / "evaluation_verts.json").write_text(json.dumps(np.zeros((NUM, 21, 3)).tolist()))
    assert evaluate(root, pred, tmp_path / "out") == 2
    assert "778x3" in capsys.readouterr().err


def test_unavailable_device_is_a_clear_error(folder, tmp_path, capsys):
    root, (_, _, pred_xyz, pred_verts) = folder
    pred = write_raw(tmp_path / "pred.json", [pred_xyz.tolist(), pred_verts.tolist()])
    argv = ["evaluate", "--gt", str(root), "--pred", str(pred), "--out", str(tmp_path / "o"), "--device", "tpu9"]
    assert main(argv) == 2
    assert "--device" in capsys.readouterr().err


def test_scoring_imports_no_torchmetrics_torchvision_or_lightning(folder, tmp_path):
    """`handmesh evaluate` loads only what scoring needs: the pure measures, not the training metric's libraries."""
    root, (_, _, pred_xyz, pred_verts) = folder
    pred = write_raw(tmp_path / "pred.json", [pred_xyz.tolist(), pred_verts.tolist()])
    argv = ["evaluate", "--gt", str(root), "--pred", str(pred), "--out", str(tmp_path / "o")]
    code = ("import sys; from handmesh.cli import main\n"
            f"rc = main({argv!r})\n"
            "heavy = {'torchmetrics', 'torchvision', 'pytorch_lightning', 'lightning', 'lightning_fabric', 'timm'}\n"
            "print('LOADED', rc, sorted({name.split('.')[0] for name in sys.modules} & heavy))")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.stdout.strip().splitlines()[-1] == "LOADED 0 []", done.stdout[-500:] + done.stderr[-2000:]


def test_the_plot_caption_names_the_stand_in_from_the_sidecar(folder, tmp_path):
    root, (_, _, pred_xyz, pred_verts) = folder
    pred = write_raw(tmp_path / "pred.json", [pred_xyz.tolist(), pred_verts.tolist()])
    assert provenance(pred) is None  # no sidecar: no claim either way
    write_pred_meta(pred, {"is_standin": True, "checkpoint": "/runs/x/model.ckpt"})
    assert "STAND-IN" in provenance(pred) and "model.ckpt" in provenance(pred)
    result = evaluate_files(root, pred, tmp_path / "out", progress=False)
    curves, scores = result.curves, result.scores
    with_caption = (tmp_path / "out" / "pck_curves.png").read_bytes()
    assert with_caption == pck_plot_png(curves, scores, provenance(pred)) != pck_plot_png(curves, scores)
    write_pred_meta(pred, {"is_standin": False, "checkpoint": "/runs/x/model.ckpt"})
    assert "MANO" in provenance(pred) and "STAND-IN" not in provenance(pred)
