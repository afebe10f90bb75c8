"""HandModel: shapes, frames (root-relative + camera translation), projection, reparameterisation, rebuild from its
config."""

from __future__ import annotations

from dataclasses import fields, replace

import pytest
import torch

from handmesh.errors import HandmeshError
from handmesh.geometry import project_points
from handmesh.joints import NUM_POSE_PARAMS
from handmesh.mano import ManoLayer
from handmesh.mano_file import resolve_mano_dir
from handmesh.models.hand_model import ADDED_LATER, HandModel, HandModelConfig
from handmesh.models.keypoint_head import expected_positions

torch.set_num_threads(2)
SIZE = 64
T8 = HandModelConfig(encoder="fastvit_t8", input_size=SIZE)


@pytest.fixture(scope="module")
def mano() -> ManoLayer:
    return ManoLayer.from_dir(resolve_mano_dir().directory)


@pytest.fixture(scope="module")
def model(mano) -> HandModel:
    torch.manual_seed(0)
    return HandModel(mano, T8).eval()


def _inputs(batch: int = 2):
    images = torch.rand(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    # off-centre principal point
    K = torch.tensor([[90.0, 0.0, 30.0], [0.0, 90.0, 33.0], [0.0, 0.0, 1.0]]).expand(batch, 3, 3)
    return images, K


def test_shapes_and_frames(model):
    images, K = _inputs()
    with torch.no_grad():
        out = model(images, K)
    assert out.vertices.shape == out.vertices_rel.shape == (2, 778, 3)
    assert out.keypoints_3d.shape == out.keypoints_rel.shape == (2, 21, 3)
    assert out.keypoints_2d.shape == (2, 21, 2)
    assert out.camera.shape == out.translation.shape == (2, 3)
    assert out.pose_rotmat.shape == (2, 16, 3, 3) and out.betas.shape == (2, 10)
    torch.testing.assert_close(out.keypoints_rel[:, 0], torch.zeros(2, 3))
    torch.testing.assert_close(out.vertices, out.vertices_rel + out.translation[:, None])
    torch.testing.assert_close(out.keypoints_2d, project_points(out.keypoints_3d, K))
    # the wrist (root) lands where the weak-perspective camera puts it: crop centre + S/2 * s * (tx, ty)
    s, tx, ty = out.camera.unbind(-1)
    expected = SIZE / 2 + SIZE / 2 * s[:, None] * torch.stack([tx, ty], -1)
    torch.testing.assert_close(out.keypoints_2d[:, 0], expected, atol=1e-3, rtol=0)


def test_untrained_output_is_the_mean_hand(mano):
    model = HandModel(mano, T8).eval()
    torch.nn.init.zeros_(model.regressor.decode.weight)
    torch.nn.init.zeros_(model.regressor.decode.bias)
    with torch.no_grad():
        out = model(*_inputs(1))
        mean = mano(mano.pose_from_axis_angle(torch.zeros(1, NUM_POSE_PARAMS), add_hands_mean=True))
    torch.testing.assert_close(out.vertices_rel, mean.vertices - mean.keypoints[:, :1], atol=1e-5, rtol=0)
    assert out.camera[0].tolist() == pytest.approx(list(model.mean_camera), abs=1e-6)


def test_pose_in_pca_space(mano):
    model = HandModel(mano, replace(T8, pose_pca=3)).eval()
    assert model.regressor.pose_dim == 6 + 3
    torch.nn.init.zeros_(model.regressor.decode.weight)
    torch.nn.init.zeros_(model.regressor.decode.bias)
    with torch.no_grad():
        model.regressor.decode.bias[6:9] = torch.tensor([0.1, -0.2, 0.05])  # x 3 iterations
        out = model(*_inputs(1))
        expected = mano.pose_from_pca(torch.zeros(1, 3), torch.tensor([[0.3, -0.6, 0.15]]), add_hands_mean=True)
    torch.testing.assert_close(out.pose_rotmat, expected, atol=1e-5, rtol=0)
    with pytest.raises(HandmeshError, match="pose_pca is 46"):
        replace(T8, pose_pca=46)


def test_reparameterisation_keeps_the_mesh(mano):
    torch.manual_seed(3)
    model = HandModel(mano, T8)
    with torch.no_grad():  # non-trivial BatchNorm statistics, so folding them is really tested
        for module in list(model.encoder.modules())[::7]:
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
        for parameter in model.regressor.decode.parameters():
            parameter.normal_(0.0, 0.05)  # so the mesh depends on the features
    model.eval()
    images, K = _inputs()
    images = torch.cat([images[:1] * 0.5, images[1:] * 0.5 + 0.5])  # a dark and a bright crop
    with torch.no_grad():
        before, features = model(images, K), model.encoder(images)
        model.reparameterize()
        after, folded = model(images, K), model.encoder(images)
    assert (before.vertices_rel[0] - before.vertices_rel[1]).abs().max() > 5e-4  # the mesh depends on the image
    assert (before.vertices - after.vertices).abs().max() <= 1e-4  # metres
    assert (features - folded).abs().max() <= 1e-4 * features.abs().max()
    assert not any(name.endswith("rbr_skip.weight") for name, _ in model.named_parameters())


def test_the_stored_config_rebuilds_the_same_network(mano, model):
    args = model.config.as_dict()
    assert args == {"encoder": "fastvit_t8", "input_size": SIZE, "head": "ief", "mean_camera": list(model.mean_camera),
                    "pose_pca": 0, "keypoint_head": False}
    assert all(type(value) in (str, int, bool, list) for value in args.values())  # loads with weights_only
    rebuilt = HandModel(mano, HandModelConfig.from_dict(args)).eval()
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    images, K = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(images, K).vertices, model(images, K).vertices)
    assert not any(key.startswith("mano.") for key in model.state_dict())  # MANO is never stored in checkpoints


def test_mano_stays_float32_under_bfloat16_autocast(model):
    images, K = _inputs(1)
    images = images[..., :32, :32].contiguous()  # bf16 is slow on CPUs: the smallest crop will do
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(images, K)
    assert out.vertices.dtype == out.keypoints_2d.dtype == torch.float32


def test_bad_input_size(mano):
    with pytest.raises(HandmeshError, match="multiple of 32"):
        replace(T8, input_size=100)


def test_keypoint_readout_is_the_weighted_cell_centre():
    logits = torch.full((1, 2, 4, 6), -1e4)
    logits[0, 0, 2, 5] = 0.0  # one cell: its centre, (j + 0.5) * stride - 0.5 px
    logits[0, 1, 1, 0] = logits[0, 1, 3, 2] = 0.0  # two equal cells: halfway between their centres
    positions = expected_positions(logits, stride=16)
    torch.testing.assert_close(positions[0, 0], torch.tensor([87.5, 39.5]))
    torch.testing.assert_close(positions[0, 1], torch.tensor([(7.5 + 39.5) / 2, (23.5 + 55.5) / 2]))


def test_keypoint_head_feeds_the_regressor(mano):
    torch.manual_seed(4)
    model = HandModel(mano, replace(T8, keypoint_head=True)).eval()
    assert model.config.as_dict()["keypoint_head"] is True
    images, K = _inputs()
    with torch.no_grad():
        out = model(images, K)
        assert out.keypoints_2d_heatmap.shape == (2, 21, 2)
        assert ((out.keypoints_2d_heatmap >= -0.5) & (out.keypoints_2d_heatmap <= SIZE - 0.5)).all()
        model.keypoint_head.maps[-1].bias[:] = 0.0
        model.keypoint_head.maps[-1].weight.normal_(0.0, 1.0)  # other positions ...
        moved = model(images, K)
    assert (moved.keypoints_2d_heatmap - out.keypoints_2d_heatmap).abs().max() > 1.0
    assert (moved.vertices - out.vertices).abs().max() > 0.0  # ... another mesh: the regressor reads them
    assert HandModel(mano, T8)(images, K).keypoints_2d_heatmap is None


def test_config_from_older_checkpoints():
    first = {"encoder": "fastvit_t8", "input_size": 128, "head": "ief", "mean_camera": [6.5, 0.0, 0.0]}  # 1st layout
    config = HandModelConfig.from_dict(first)
    assert (config.pose_pca, config.keypoint_head, config.mean_camera) == (0, False, (6.5, 0.0, 0.0))
    assert HandModelConfig.from_dict(config.as_dict()) == config
    # every setting is either in the first checkpoints or has the value that rebuilds them
    assert {field.name for field in fields(HandModelConfig)} == set(first) | set(ADDED_LATER)
    with pytest.raises(HandmeshError, match=r"unknown \['width'\]"):
        HandModelConfig.from_dict({**first, "width": 2})
    with pytest.raises(HandmeshError, match=r"missing \['encoder'\]"):
        HandModelConfig.from_dict({key: value for key, value in first.items() if key != "encoder"})
