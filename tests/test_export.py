"""ONNX export of the whole HandModel: parity with PyTorch through ONNX Runtime, dynamic batch, atomic writes, and
every bad input as a clean exit 2."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from handmesh.bench.model import stress_initialise
from handmesh.checkpoints import FORMAT_VERSION, METADATA_KEY, MODEL_PREFIX, atomic_save
from handmesh.cli import main
from handmesh.errors import HandmeshError
from handmesh.export import (
    METADATA_PREFIX,
    OUTPUT_NAMES,
    PARITY_TOLERANCE_M,
    export_model,
    measure_parity,
    onnx_runner,
    onnx_session,
    random_inputs,
    torch_runner,
)
from handmesh.mano import ManoLayer
from handmesh.mano_file import resolve_mano_dir
from handmesh.models.hand_model import HandModel, HandModelConfig

torch.set_num_threads(2)
SIZE = 64


@pytest.fixture(scope="module")
def model() -> HandModel:
    torch.manual_seed(0)
    hand_model = HandModel(ManoLayer.from_dir(resolve_mano_dir().directory),
                           HandModelConfig(encoder="fastvit_t8", input_size=SIZE))
    return stress_initialise(hand_model).eval()  # random BN statistics and layer scales: every fold matters


@pytest.fixture(scope="module")
def checkpoint(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "t8.ckpt"
    atomic_save({
        "state_dict": {MODEL_PREFIX + key: value for key, value in model.state_dict().items()},
        METADATA_KEY: {"format": FORMAT_VERSION, "model_args": model.config.as_dict(),
                       "mano": {"is_standin": bool(model.mano.is_standin)}},
    }, path)
    return path


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    return export_model(model, path, "onnx")


def test_onnx_round_trip_parity(model, exported):
    assert exported.path.is_file() and exported.format == "onnx"
    assert exported.parity.batch == 3  # not the traced batch (2): the dynamic axis is exercised
    assert exported.parity.max_abs_diff_m <= PARITY_TOLERANCE_M
    assert [p.name for p in exported.path.parent.iterdir()] == ["model.onnx"]  # no temporary left behind
    # the bound means something: two images give vertices far more different than the export's error
    images, K = random_inputs(2, SIZE, seed=5)
    vertices = torch_runner(model)(images.numpy(), K.numpy())[0]
    assert np.abs(vertices[0] - vertices[1]).max() > 100 * PARITY_TOLERANCE_M


def test_onnx_metadata_names_the_hand_model(model, exported):
    metadata = onnx_session(exported.path).get_modelmeta().custom_metadata_map  # as any ONNX Runtime user reads it
    standin = resolve_mano_dir().is_standin
    assert metadata[METADATA_PREFIX + "hand_model"].startswith("stand-in" if standin else "MANO")
    assert metadata[METADATA_PREFIX + "hand_model_source"] == model.mano.source
    assert metadata[METADATA_PREFIX + "encoder"] == "fastvit_t8"
    assert metadata[METADATA_PREFIX + "input_size"] == str(SIZE)
    assert HandModelConfig.from_dict(json.loads(metadata[METADATA_PREFIX + "config"])) == model.config


def test_onnx_dynamic_batch_and_outputs(model, exported):
    session = onnx_session(exported.path)
    assert [o.name for o in session.get_outputs()] == list(OUTPUT_NAMES)
    run = onnx_runner(session)
    for batch in (1, 5):
        images, K = random_inputs(batch, SIZE, seed=batch)
        vertices, keypoints, camera = run(images.numpy(), K.numpy())
        assert vertices.shape == (batch, 778, 3) and keypoints.shape == (batch, 21, 3) and camera.shape == (batch, 3)
    parity = measure_parity(model, run, SIZE, batch=1, seed=7)
    assert parity.max_abs_diff_m <= PARITY_TOLERANCE_M


def test_parity_failure_writes_nothing(model, tmp_path):
    out = tmp_path / "model.onnx"
    with pytest.raises(HandmeshError, match="nothing was written"):
        export_model(model, out, "onnx", tolerance=0.0)  # float rounding alone exceeds 0
    assert list(tmp_path.iterdir()) == []


def test_cli_export(checkpoint, tmp_path, capsys):
    out = tmp_path / "cli.onnx"
    assert main(["export", "--checkpoint", str(checkpoint), "--format", "onnx", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert out.is_file() and "parity with PyTorch" in printed and " m," in printed
    assert ("metadata says so" in printed) == resolve_mano_dir().is_standin


@pytest.mark.parametrize("fmt, name", [("onnx", "m.onnx"), ("hub", "hub")])
def test_cli_export_replaces_only_with_overwrite(checkpoint, tmp_path, capsys, fmt, name):
    out = tmp_path / name
    if fmt == "hub":
        out.mkdir()  # an empty folder made for the export is not a previous output
        assert main(["export", "--checkpoint", str(checkpoint), "--format", fmt, "--out", str(out)]) == 0
    else:
        out.write_bytes(b"previous work")
    before = sorted((path.name, path.stat().st_mtime_ns) for path in tmp_path.rglob("*"))
    assert main(["export", "--checkpoint", str(checkpoint), "--format", fmt, "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert "exists; refusing to replace it. Pass --overwrite" in error and "Traceback" not in error
    assert sorted((path.name, path.stat().st_mtime_ns) for path in tmp_path.rglob("*")) == before
    assert main(["export", "--checkpoint", str(checkpoint), "--format", fmt, "--out", str(out), "--overwrite"]) == 0
    assert (out.read_bytes() != b"previous work") if fmt == "onnx" else (out / "model.safetensors").is_file()


@pytest.mark.parametrize("arguments, message", [
    (["--checkpoint", "{missing}", "--out", "{out}"], "no checkpoint at"),
    (["--checkpoint", "{corrupt}", "--out", "{out}"], "not a readable checkpoint"),
    (["--checkpoint", "{checkpoint}", "--format", "tflite", "--out", "{out}"], "unknown export format 'tflite'"),
    (["--checkpoint", "{checkpoint}", "--out", "{tmp}/no/such/folder/m.onnx"], "does not exist"),
])
def test_cli_bad_input_exits_2(arguments, message, checkpoint, tmp_path, capsys):
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(b"PK\x03\x04 truncated" + bytes(300))
    values = {"missing": tmp_path / "missing.ckpt", "corrupt": corrupt, "checkpoint": checkpoint,
              "out": tmp_path / "m.onnx", "tmp": tmp_path}
    assert main(["export", *(argument.format(**values) for argument in arguments)]) == 2
    error = capsys.readouterr().err
    assert message in error and "Traceback" not in error
    assert not (tmp_path / "m.onnx").exists()


def test_cli_missing_engine_exits_2(checkpoint, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "coremltools", None)  # as if not installed: `import coremltools` fails
    out = tmp_path / "m.mlpackage"
    assert main(["export", "--checkpoint", str(checkpoint), "--format", "coreml", "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert "pip install 'coremltools'" in error and not out.exists()


@pytest.mark.slow
def test_coreml_converts(model, tmp_path):
    pytest.importorskip("coremltools")
    result = export_model(model, tmp_path / "model.mlpackage", "coreml")
    assert (result.path / "Manifest.json").is_file()
    if sys.platform != "darwin":  # Core ML runs models only on Apple platforms
        assert result.parity.max_abs_diff_m is None and "macOS" in result.parity.describe()
    else:
        assert result.parity.max_abs_diff_m <= PARITY_TOLERANCE_M
