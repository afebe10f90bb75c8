"""Predictor: rebuilds the trained network from a checkpoint without Lightning, reparameterised, same outputs; clear
errors for bad checkpoints; `handmesh predict` writes the official pred.json."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from handmesh.checkpoints import FORMAT_VERSION, METADATA_KEY, MODEL_PREFIX, atomic_save
from handmesh.cli import main
from handmesh.data.freihand import FreiHANDDataset
from handmesh.errors import CheckpointError
from handmesh.inference import Predictor
from handmesh.mano import ManoLayer
from handmesh.mano_file import resolve_mano_dir
from handmesh.models.hand_model import HandModel, HandModelConfig
from handmesh.predjson import read_pred_json

from tiny_synth import N_EVAL, tiny_checkpoint, tiny_synthetic_set

torch.set_num_threads(2)
SIZE = 64


@pytest.fixture(scope="module")
def root(pytestconfig, tmp_path_factory):
    return tiny_synthetic_set(pytestconfig, tmp_path_factory)


@pytest.fixture(scope="module")
def checkpoint(root, tmp_path_factory):
    return tiny_checkpoint(root, tmp_path_factory.mktemp("run"), SIZE)


@pytest.fixture(scope="module")
def evaluation(root):
    dataset = FreiHANDDataset(root, split="evaluation", input_size=SIZE, progress=False)
    items = [dataset[i] for i in range(len(dataset))]
    return torch.stack([item["image"] for item in items]), torch.stack([item["K"] for item in items])


def test_predictor_reproduces_the_trained_network(checkpoint, evaluation):
    images, K = evaluation
    folded = Predictor.from_checkpoint(checkpoint)
    plain = Predictor.from_checkpoint(checkpoint, reparameterize=False)
    assert folded.is_trained and folded.input_size == SIZE and folded.faces.shape == (1538, 3)
    assert "fastvit_t8 64px" in folded.description and "step 2" in folded.description
    state = torch.load(checkpoint, weights_only=True)["state_dict"]
    for key, value in plain.model.state_dict().items():
        assert torch.equal(value, state["model." + key]), key
    a, b = folded.predict_images(images, K), plain.predict_images(images, K)
    assert a.vertices.shape == (N_EVAL, 778, 3) and a.keypoints_2d.shape == (N_EVAL, 21, 2)
    assert np.abs(a.vertices - b.vertices).max() <= 1e-4
    crops = images.permute(0, 2, 3, 1).numpy()  # (B, S, S, 3) uint8, as the demo's crops
    c = folded.predict(crops, K.numpy())  # the same uint8 images
    assert np.abs(c.keypoints_3d - a.keypoints_3d).max() < 1e-6
    d = folded.predict_images(images.float() / 255, K)  # float [0, 1] input: the same network input
    assert np.abs(d.keypoints_3d - a.keypoints_3d).max() < 1e-6


def test_no_lightning_at_run_time(checkpoint):
    script = (
        "import sys, numpy as np\n"
        "from handmesh.inference import Predictor\n"
        f"p = Predictor.from_checkpoint({str(checkpoint)!r})\n"
        f"p.predict(np.zeros((1, {SIZE}, {SIZE}, 3), np.uint8), np.eye(3, dtype=np.float32)[None])\n"
        "loaded = [m for m in sys.modules\n"
        "          if m.split('.')[0] in ('pytorch_lightning', 'lightning', 'lightning_fabric')]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=300)


def test_untrained_predictor():
    one, two = Predictor.untrained(input_size=SIZE), Predictor.untrained(input_size=SIZE)
    assert not one.is_trained and "UNTRAINED" in one.description
    crops = np.random.default_rng(0).integers(0, 255, (2, SIZE, SIZE, 3), dtype=np.uint8)
    K = np.array([[80.0, 0, SIZE / 2], [0, 80.0, SIZE / 2], [0, 0, 1]], np.float32)[None].repeat(2, 0)
    a, b = one.predict(crops, K), two.predict(crops, K)
    np.testing.assert_array_equal(a.vertices, b.vertices)  # seeded: reproducible
    assert a.camera.shape == (2, 3) and (a.camera[:, 0] > 0).all()
    with pytest.raises(ValueError, match=rf"expected \(B, {SIZE}, {SIZE}, 3\) uint8"):
        one.predict(crops[:, :32], K)
    with pytest.raises(ValueError, match="K: expected"):
        one.predict(crops, K[:1])


def test_bad_checkpoints_are_clear_errors(checkpoint, tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        Predictor.from_checkpoint(tmp_path / "missing.ckpt")
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(checkpoint.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        Predictor.from_checkpoint(truncated)
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {"backbone.weight": torch.zeros(3)}}, foreign)
    with pytest.raises(CheckpointError, match="another program"):
        Predictor.from_checkpoint(foreign)
    content = torch.load(checkpoint, weights_only=True)
    content[METADATA_KEY]["model_args"]["encoder"] = "fastvit_t12"  # says one network, holds another's weights
    other = tmp_path / "other.ckpt"
    atomic_save(content, other)
    with pytest.raises(CheckpointError, match="does not fit the network"):
        Predictor.from_checkpoint(other)


def _first_layout_checkpoint(path) -> HandModel:
    """Writes a checkpoint as the first handmesh wrote them (network settings and flat hyper-parameters without
    pose_pca and keypoint_head) -> the network it holds."""
    import pytorch_lightning as pl

    torch.manual_seed(3)
    model = HandModel(ManoLayer.from_dir(resolve_mano_dir().directory),
                      HandModelConfig(encoder="fastvit_t8", input_size=SIZE)).eval()
    first = {"encoder": "fastvit_t8", "input_size": SIZE, "head": "ief", "mean_camera": [6.5, 0.0, 0.0]}
    hyper_parameters = {**first, "pretrained": None, "drop_path_rate": 0.0, "mano_dir": None, "lr": 5e-4,
                        "weight_decay": 1e-4, "encoder_lr_mult": 1.0, "warmup_steps": 500, "min_lr_ratio": 0.01}
    atomic_save({"pytorch-lightning_version": pl.__version__, "epoch": 0, "global_step": 5,
                 "state_dict": {MODEL_PREFIX + key: value for key, value in model.state_dict().items()},
                 "hyper_parameters": hyper_parameters,
                 METADATA_KEY: {"format": FORMAT_VERSION, "model_args": first,
                                "mano": {"is_standin": bool(model.mano.is_standin), "source": model.mano.source}}},
                path)
    return model


def test_a_checkpoint_in_the_first_layout_loads(root, evaluation, tmp_path, capsys):
    path = tmp_path / "first.ckpt"
    model = _first_layout_checkpoint(path)
    predictor = Predictor.from_checkpoint(path)
    assert predictor.model.config == HandModelConfig(encoder="fastvit_t8", input_size=SIZE, pose_pca=0,
                                                     keypoint_head=False)
    images, K = evaluation
    with torch.no_grad():
        expected = model(images, K).vertices.numpy()
    assert np.abs(predictor.predict_images(images, K).vertices - expected).max() <= 1e-4
    # and through Lightning: `validate` with the network's settings on the command line
    assert main(["validate", "--config", "configs/quickstart.yaml", "--data.root", str(root), "--data.num_workers",
                 "0", "--model.input_size", str(SIZE), "--model.pose_pca", "0", "--model.keypoint_head", "false",
                 "--trainer.logger", "false",
                 "--trainer.default_root_dir", str(tmp_path / "run"), "--ckpt_path", str(path)]) == 0
    assert "Traceback" not in capsys.readouterr().err


def test_a_model_trained_on_another_hand_model_is_flagged(checkpoint, tmp_path):
    content = torch.load(checkpoint, weights_only=True)
    content[METADATA_KEY]["mano"]["is_standin"] = not content[METADATA_KEY]["mano"]["is_standin"]
    atomic_save(content, tmp_path / "flipped.ckpt")
    assert "WARNING: trained with" in Predictor.from_checkpoint(tmp_path / "flipped.ckpt").description


def test_predict_command_writes_the_official_file(root, checkpoint, evaluation, tmp_path, capsys):
    out = tmp_path / "pred.json"
    assert main(["predict", "--checkpoint", str(checkpoint), "--data.root", str(root), "--out", str(out),
                 "--batch-size", "3", "--num-workers", "0"]) == 0
    xyz, verts = read_pred_json(out)
    assert xyz.shape == (N_EVAL, 21, 3) and verts.shape == (N_EVAL, 778, 3)
    expected = Predictor.from_checkpoint(checkpoint).predict_images(*evaluation)
    np.testing.assert_allclose(xyz, expected.keypoints_3d, atol=1e-6)
    np.testing.assert_allclose(verts, expected.vertices, atol=1e-6)
    assert main(["predict", "--checkpoint", str(tmp_path / "none.ckpt"), "--data.root", str(root), "--out",
                 str(tmp_path / "other.json")]) == 2
    assert "no checkpoint at" in capsys.readouterr().err
