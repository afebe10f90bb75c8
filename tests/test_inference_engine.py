"""Predictor engines: ONNX Runtime matches the PyTorch network, its file is built once and cached beside the
checkpoint (rebuilt when the weights change), and every way it can fail falls back to torch with one warning line
(or is an error when ONNX Runtime was asked for by name)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import handmesh.engine
from handmesh.bench.model import stress_initialise
from handmesh.checkpoints import FORMAT_VERSION, METADATA_KEY, MODEL_PREFIX, atomic_save
from handmesh.errors import HandmeshError
from handmesh.export import PARITY_TOLERANCE_M
from handmesh.inference import Predictor
from handmesh.mano import ManoLayer
from handmesh.mano_file import resolve_mano_dir
from handmesh.models.hand_model import HandModel, HandModelConfig

torch.set_num_threads(2)
SIZE = 64


def save_checkpoint(path, seed: int) -> None:
    torch.manual_seed(seed)
    model = HandModel(ManoLayer.from_dir(resolve_mano_dir().directory),
                      HandModelConfig(encoder="fastvit_t8", input_size=SIZE))
    stress_initialise(model)  # random BN statistics and layer scales: every fold matters
    atomic_save({
        "state_dict": {MODEL_PREFIX + key: value for key, value in model.state_dict().items()},
        METADATA_KEY: {"format": FORMAT_VERSION, "model_args": model.config.as_dict(),
                       "mano": {"is_standin": bool(model.mano.is_standin)}},
    }, path)


@pytest.fixture
def checkpoint(tmp_path):
    path = tmp_path / "run" / "model.ckpt"
    save_checkpoint(path, seed=0)
    return path


def crops(batch: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (batch, SIZE, SIZE, 3), dtype=np.uint8)
    K = np.tile(np.array([[1.5 * SIZE, 0, SIZE / 2], [0, 1.5 * SIZE, SIZE / 2], [0, 0, 1]], np.float32), (batch, 1, 1))
    K[:, :2, 2] += rng.uniform(-3, 3, (batch, 2)).astype(np.float32)
    return images, K


@pytest.mark.slow
def test_onnxruntime_matches_torch_and_is_cached_beside_the_checkpoint(checkpoint, monkeypatch):
    fast = Predictor.from_checkpoint(checkpoint, engine="auto")
    assert fast.engine == "onnxruntime"
    (cached,) = checkpoint.parent.glob("model.*.onnx")
    reference = Predictor.from_checkpoint(checkpoint, engine="torch")
    assert reference.engine == "torch" and list(checkpoint.parent.glob("*.onnx")) == [cached]
    got, want = fast.predict(*crops()), reference.predict(*crops())
    for name in ("vertices", "keypoints_3d"):
        assert np.abs(getattr(got, name) - getattr(want, name)).max() < PARITY_TOLERANCE_M
    np.testing.assert_allclose(got.keypoints_2d, want.keypoints_2d, atol=1e-2)  # pixels
    np.testing.assert_allclose(got.camera, want.camera, atol=1e-4)
    # a second start reuses the file: the exporter is not called again
    monkeypatch.setattr(handmesh.engine, "export_model", lambda *args, **kwargs: pytest.fail("exported again"))
    again = Predictor.from_checkpoint(checkpoint, engine="onnxruntime")
    assert again.engine == "onnxruntime" and again.engine_note.endswith(f"{cached})")


@pytest.mark.slow
def test_a_changed_checkpoint_rebuilds_the_file(checkpoint):
    Predictor.from_checkpoint(checkpoint, engine="auto")
    (first,) = checkpoint.parent.glob("model.*.onnx")
    save_checkpoint(checkpoint, seed=1)  # other weights, same path
    changed = Predictor.from_checkpoint(checkpoint, engine="auto")
    (second,) = checkpoint.parent.glob("model.*.onnx")  # the stale file is gone
    assert changed.engine == "onnxruntime" and second != first
    want = Predictor.from_checkpoint(checkpoint, engine="torch").predict(*crops())
    assert np.abs(changed.predict(*crops()).vertices - want.vertices).max() < PARITY_TOLERANCE_M


@pytest.mark.slow
def test_a_drifting_file_falls_back_to_torch_with_one_line(checkpoint, tmp_path):
    Predictor.from_checkpoint(checkpoint, engine="auto")
    (cached,) = checkpoint.parent.glob("model.*.onnx")
    other = tmp_path / "other" / "model.ckpt"
    save_checkpoint(other, seed=1)
    Predictor.from_checkpoint(other, engine="auto")
    (foreign,) = other.parent.glob("model.*.onnx")
    cached.write_bytes(foreign.read_bytes())  # a file that no longer matches its weights: outputs drift
    messages = []
    fallback = Predictor(Predictor.from_checkpoint(checkpoint, reparameterize=False).model, "test", True,
                         engine="auto", cache_dir=checkpoint.parent, cache_stem="model", notify=messages.append)
    assert fallback.engine == "torch"
    assert len(messages) == 1 and "\n" not in messages[0] and "differs from PyTorch" in messages[0]
    with pytest.raises(HandmeshError, match="differs from PyTorch"):
        Predictor.from_checkpoint(checkpoint, engine="onnxruntime")


def test_an_export_failure_falls_back_to_torch(checkpoint, monkeypatch):
    def broken_exporter(*args, **kwargs):
        raise RuntimeError("Exporting the operator 'aten::unknown' to ONNX opset version 17 is not supported")

    monkeypatch.setattr(handmesh.engine, "export_model", broken_exporter)
    messages = []
    model = Predictor.from_checkpoint(checkpoint, reparameterize=False).model
    predictor = Predictor(model, "test", True, engine="auto", cache_dir=checkpoint.parent, notify=messages.append)
    assert predictor.engine == "torch" and predictor.predict(*crops()).vertices.shape == (3, 778, 3)
    assert len(messages) == 1 and "aten::unknown" in messages[0]
    assert not list(checkpoint.parent.glob("*.onnx"))


def test_untrained_models_cache_in_the_user_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    predictor = Predictor.untrained(input_size=SIZE, engine="auto")
    assert predictor.engine == "onnxruntime"
    assert len(list((tmp_path / "handmesh" / "onnx").glob(f"untrained-fastvit_t8-{SIZE}.*.onnx"))) == 1


def test_unknown_engine_is_a_clear_error():
    with pytest.raises(HandmeshError, match="expected one of auto, torch, onnxruntime"):
        Predictor.untrained(input_size=SIZE, engine="tensorrt")


def test_the_demo_offers_the_same_engines():
    from handmesh.demo.app import ENGINES as demo_engines
    from handmesh.inference import ENGINES

    assert demo_engines == ENGINES
