"""The 21 keypoints are FreiHAND's: J_regressor applied to the POSED mesh, plus 5 fingertip vertices, in FreiHAND order.

Checked against MANO and the toolbox's procedure written out in numpy (tests/mano_numpy.py) from the files' arrays, on
the stand-in and on a perturbed MANO-format model, for the layer, the network and the synthetic set's annotations.
"""

from __future__ import annotations

import numpy as np
import orjson
import pytest
import torch

from handmesh.data.synth import uv_scale_from_root
from handmesh.mano import ManoLayer
from handmesh.models.hand_model import HandModel, HandModelConfig

from mano_numpy import axis_angle, freihand_keypoints, load_arrays, posed_vertices, write_perturbed


@pytest.fixture(scope="module", params=["standin", "perturbed"])
def model_dir(request, standin_dir, tmp_path_factory):
    if request.param == "standin":
        return standin_dir
    return write_perturbed(standin_dir, tmp_path_factory.mktemp("perturbed_mano"))


def _flexed_samples(model: dict, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random PCA finger poses around hands_mean (12 components, 1.5 sd), any global rotation, shapes ~ N(0, 1):
    -> rotations (count, 16, 3, 3), betas (count, 10)."""
    rng = np.random.default_rng(seed)
    fingers = model["hands_mean"] + rng.normal(0.0, 1.5, (count, 12)) @ model["hands_components"][:12]  # (count, 45)
    global_orient = rng.normal(0.0, 1.0, (count, 3))
    rotations = axis_angle(np.concatenate([global_orient, fingers], axis=1).reshape(count, 16, 3))
    return rotations, rng.normal(0.0, 1.0, (count, 10))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_keypoints_are_the_regressor_on_the_posed_mesh(model_dir, dtype):
    model = load_arrays(model_dir / "MANO_RIGHT.pkl")
    layer = ManoLayer.from_dir(model_dir, "right")
    rotations, betas = _flexed_samples(model, count=6, seed=1)
    with torch.no_grad():
        output = layer(torch.as_tensor(rotations, dtype=dtype), torch.as_tensor(betas, dtype=dtype))
    assert output.keypoints.dtype == dtype and output.keypoints.shape == (6, 21, 3)
    tolerance = 1e-6 if dtype == torch.float64 else 1e-5
    for b in range(len(rotations)):
        vertices = posed_vertices(model, rotations[b], betas[b])
        np.testing.assert_allclose(output.vertices[b].double().numpy(), vertices, atol=tolerance, rtol=0)
        np.testing.assert_allclose(output.keypoints[b].double().numpy(), freihand_keypoints(model, vertices),
                                   atol=tolerance, rtol=0)


def test_the_network_keypoints_are_its_mesh_keypoints(standin_dir):
    """HandModel (and everything built on it: Predictor, export) takes keypoints from the layer: in the camera frame
    they are still J_regressor @ its vertices plus the tip vertices (the regressor's rows sum to 1, so translation
    commutes with it). The layer holds no weights, so checkpoints from before this definition load unchanged."""
    model = load_arrays(standin_dir / "MANO_RIGHT.pkl")
    network = HandModel(ManoLayer.from_dir(standin_dir, "right"),
                        HandModelConfig(encoder="fastvit_t8", input_size=64)).eval()
    assert not [key for key in network.state_dict() if key.startswith("mano.")]
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    K = torch.tensor([[150.0, 0.0, 32.0], [0.0, 150.0, 32.0], [0.0, 0.0, 1.0]]).expand(2, 3, 3)
    with torch.no_grad():
        output = network(images, K)
    for b in range(2):
        vertices = output.vertices[b].double().numpy()
        np.testing.assert_allclose(output.keypoints_3d[b].double().numpy(), freihand_keypoints(model, vertices),
                                   atol=1e-5, rtol=0)


def _json(root, name: str) -> np.ndarray:
    return np.asarray(orjson.loads((root / name).read_bytes()), dtype=np.float64)


def test_synthetic_annotations_decode_by_the_official_procedure(tiny_root, standin_dir):
    """The toolbox's `pose_hand`: split the 61 values, recover_root (keypoint 9 at [(u - cx), (v - cy), f] / scale,
    f = (fx + fy) / 2), pose_by_root (pose, take keypoint 9 of the posed mesh, translate), then _calc_coords."""
    model = load_arrays(standin_dir / "MANO_RIGHT.pkl")
    for split in ("training", "evaluation"):
        mano = _json(tiny_root, f"{split}_mano.json")[:, 0]  # (N, 61)
        K, xyz, verts = (_json(tiny_root, f"{split}_{key}.json") for key in ("K", "xyz", "verts"))
        for n in range(len(mano)):
            poses, shapes, uv_root, scale = mano[n, :48], mano[n, 48:58], mano[n, 58:60], mano[n, 60]
            full_pose = poses + np.concatenate([np.zeros(3), model["hands_mean"]])  # relative to hands_mean
            vertices = posed_vertices(model, axis_angle(full_pose.reshape(16, 3)), shapes)
            focal = 0.5 * (K[n, 0, 0] + K[n, 1, 1])
            xyz_root = np.concatenate([uv_root - K[n, :2, 2], [focal]]) / scale
            translation = xyz_root - freihand_keypoints(model, vertices)[9]
            np.testing.assert_allclose(verts[n], vertices + translation, atol=1e-6, rtol=0)
            np.testing.assert_allclose(xyz[n], freihand_keypoints(model, vertices + translation), atol=1e-6, rtol=0)


def test_the_writer_encodes_the_root_as_the_toolbox_decodes_it():
    """uv_root and scale as `handmesh synth` writes them give back keypoint 9's position by `recover_root`, also
    where fx != fy."""
    rng = np.random.default_rng(0)
    root = np.stack([rng.uniform(-0.1, 0.1, 5), rng.uniform(-0.1, 0.1, 5), rng.uniform(0.3, 1.0, 5)], axis=1)
    K = np.tile(np.eye(3), (5, 1, 1))
    K[:, 0, 0], K[:, 1, 1], K[:, :2, 2] = (rng.uniform(400, 700, 5), rng.uniform(400, 700, 5),
                                           rng.uniform(90, 130, (5, 2)))
    uv_root, scale = uv_scale_from_root(root, K)
    for n in range(5):
        focal = 0.5 * (K[n, 0, 0] + K[n, 1, 1])
        np.testing.assert_allclose(np.concatenate([uv_root[n] - K[n, :2, 2], [focal]]) / scale[n], root[n], atol=1e-12)
