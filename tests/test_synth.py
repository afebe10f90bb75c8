"""The synthetic FreiHAND-format generator: exact layout, annotations that agree with the images and with FreiHAND's
official MANO decoding, determinism, and all-or-nothing writing."""

from __future__ import annotations

import cv2
import numpy as np
import orjson
import pytest
import torch

from handmesh.data.synth import MARKER, PARTIAL_TAG, ViewRange, canonical_rotation, sample_global_rotation, synthesize
from handmesh.errors import DataError
from handmesh.geometry import axis_angle_to_rotmat
from handmesh.mano import ManoLayer
from handmesh.mano_file import resolve_mano_dir

from conftest import TINY_EVAL as N_EVAL, TINY_TRAIN as N_TRAIN


def _json(root, name):
    return np.asarray(orjson.loads((root / name).read_bytes()), dtype=np.float64)


def test_layout_matches_freihand(tiny_root):
    rgb, mask = tiny_root / "training" / "rgb", tiny_root / "training" / "mask"
    assert sorted(p.name for p in rgb.iterdir()) == [f"{i:08d}.jpg" for i in range(4 * N_TRAIN)]
    assert sorted(p.name for p in mask.iterdir()) == [f"{i:08d}.jpg" for i in range(N_TRAIN)]
    assert len(list((tiny_root / "evaluation" / "rgb").iterdir())) == N_EVAL
    for split, count in (("training", N_TRAIN), ("evaluation", N_EVAL)):
        assert _json(tiny_root, f"{split}_K.json").shape == (count, 3, 3)
        assert _json(tiny_root, f"{split}_mano.json").shape == (count, 1, 61)
        assert _json(tiny_root, f"{split}_xyz.json").shape == (count, 21, 3)
        assert _json(tiny_root, f"{split}_verts.json").shape == (count, 778, 3)
        assert _json(tiny_root, f"{split}_scale.json").shape == (count,)
    image = cv2.imread(str(tiny_root / "training" / "rgb" / "00000000.jpg"))
    assert image.shape == (224, 224, 3)
    info = orjson.loads((tiny_root / MARKER).read_bytes())
    assert info["synthetic"] is True and info["n_train"] == N_TRAIN and info["seed"] == 0
    readme = (tiny_root / "README.txt").read_text()
    assert "SYNTHETIC" in readme
    if info["is_standin"]:
        assert "STAND-IN" in readme


def test_mano_values_decode_to_the_stored_mesh(tiny_root):
    """FreiHAND's toolbox decoding, written out here independently: pose relative to hands_mean, shape, then keypoint 9
    placed at [(u - cx), (v - cy), f] / scale with f = (fx + fy) / 2."""
    layer = ManoLayer.from_dir(resolve_mano_dir().directory)
    for split in ("training", "evaluation"):
        mano = _json(tiny_root, f"{split}_mano.json")[:, 0]  # (N, 61)
        K = _json(tiny_root, f"{split}_K.json")
        pose = torch.as_tensor(mano[:, :48]).reshape(-1, 16, 3)
        pose[:, 1:] += layer.hands_mean.double().reshape(15, 3)
        output = layer(axis_angle_to_rotmat(pose), torch.as_tensor(mano[:, 48:58]))
        focal = (K[:, 0, 0] + K[:, 1, 1]) / 2
        root = np.stack([mano[:, 58] - K[:, 0, 2], mano[:, 59] - K[:, 1, 2], focal], axis=1) / mano[:, 60:61]
        offset = root - output.keypoints[:, 9].numpy()
        np.testing.assert_allclose(output.vertices.numpy() + offset[:, None], _json(tiny_root, f"{split}_verts.json"),
                                   atol=1e-5)
        np.testing.assert_allclose(output.keypoints.numpy() + offset[:, None], _json(tiny_root, f"{split}_xyz.json"),
                                   atol=1e-5)
        # uv_root is keypoint 9 projected, scale = f / z9
        xyz = _json(tiny_root, f"{split}_xyz.json")
        uv = np.einsum("nij,nj->ni", K, xyz[:, 9])
        np.testing.assert_allclose(mano[:, 58:60], uv[:, :2] / uv[:, 2:], atol=1e-6)
        np.testing.assert_allclose(mano[:, 60], focal / xyz[:, 9, 2], rtol=1e-9)


def test_scale_is_the_reference_bone_length(tiny_root):
    xyz = _json(tiny_root, "training_xyz.json")
    np.testing.assert_allclose(_json(tiny_root, "training_scale.json"), np.linalg.norm(xyz[:, 9] - xyz[:, 10], axis=1))
    assert np.all((0.015 < _json(tiny_root, "training_scale.json")) & (_json(tiny_root, "training_scale.json") < 0.06))


def test_keypoints_project_inside_the_mask_and_the_hand_is_framed_like_freihand(tiny_root):
    K, xyz, verts = (_json(tiny_root, f"training_{key}.json") for key in ("K", "xyz", "verts"))
    for i in range(N_TRAIN):
        mask = cv2.imread(str(tiny_root / "training" / "mask" / f"{i:08d}.jpg"), cv2.IMREAD_GRAYSCALE) > 127
        mask = cv2.dilate(mask.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0  # 2 px tolerance at the silhouette
        uv = xyz[i] @ K[i].T
        uv = uv[:, :2] / uv[:, 2:]
        pixels = np.round(uv).astype(int)
        assert np.all((pixels >= 0) & (pixels < 224)), f"sample {i}: keypoints leave the image"
        assert mask[pixels[:, 1], pixels[:, 0]].all(), f"sample {i}: a keypoint projects outside the mask"
        box = verts[i] @ K[i].T
        box = box[:, :2] / box[:, 2:]
        side = (box.max(0) - box.min(0)).max() / 224
        assert 0.35 < side < 0.75, f"sample {i}: hand spans {side:.2f} of the image"
        assert np.all(np.abs((box.max(0) + box.min(0)) / 2 - 111.5) < 30)


def test_versions_share_geometry_but_differ_in_colour(tiny_root):
    images = [cv2.imread(str(tiny_root / "training" / "rgb" / f"{v * N_TRAIN + 1:08d}.jpg")).astype(float)
              for v in range(4)]
    mask = cv2.imread(str(tiny_root / "training" / "mask" / f"{1:08d}.jpg"), cv2.IMREAD_GRAYSCALE) > 127
    for other in images[1:]:
        assert np.abs(other - images[0])[~mask].mean() > 5  # backgrounds differ
    # inside the hand, the originals and the homogenised version agree up to camera response and noise
    assert np.abs(images[1] - images[0])[mask].mean() < np.abs(images[1] - images[0])[~mask].mean()


def test_deterministic_and_independent_of_counts(tiny_root, tmp_path):
    small = synthesize(None, tmp_path / "small", 2, 1, seed=0, progress=False, log=None).root
    for name in ("training_mano.json", "training_xyz.json", "training_K.json"):  # up to batched-BLAS rounding
        np.testing.assert_allclose(_json(small, name), _json(tiny_root, name)[:2], rtol=0, atol=1e-9)
    np.testing.assert_allclose(_json(small, "evaluation_verts.json"), _json(tiny_root, "evaluation_verts.json")[:1],
                               atol=1e-9)
    # sample 1, version 0 is the same picture whatever the counts (image index v * N + i changes with N)
    same = cv2.imread(str(small / "training" / "rgb" / "00000001.jpg")).astype(int)
    assert np.abs(same - cv2.imread(str(tiny_root / "training" / "rgb" / "00000001.jpg")).astype(int)).max() <= 1
    other = synthesize(None, tmp_path / "other", 2, 1, seed=1, progress=False, log=None).root
    assert not np.allclose(_json(other, "training_mano.json"), _json(small, "training_mano.json"))


def test_worker_processes_write_the_same_files(tiny_root, tmp_path):
    parallel = synthesize(None, tmp_path / "parallel", N_TRAIN, N_EVAL, seed=0, workers=2, progress=False,
                          log=None).root
    files = sorted(path.relative_to(tiny_root) for path in tiny_root.rglob("*")
                   if path.is_file() and ".npy" not in path.name)
    assert files == sorted(path.relative_to(parallel) for path in parallel.rglob("*") if path.is_file())
    for name in files:
        if name.name != MARKER and name.name != "README.txt":  # these hold the generation time
            assert (parallel / name).read_bytes() == (tiny_root / name).read_bytes(), name


def test_view_range_bounds_roll_and_sides():
    layer = ManoLayer.from_dir(resolve_mano_dir().directory)
    canonical = canonical_rotation(layer)
    rng = np.random.default_rng(0)
    for views in (ViewRange(back_fraction=0.0, max_roll_deg=30.0), ViewRange(back_fraction=1.0, max_roll_deg=10.0)):
        for _ in range(200):
            # rotation from the upright palm view
            relative = sample_global_rotation(rng, canonical, views) @ canonical.T
            palm_normal, fingers = relative @ [0.0, 0.0, -1.0], relative @ [0.0, -1.0, 0.0]
            assert (palm_normal[2] < 0) == (views.back_fraction == 0.0)  # toward the camera: palm side shown
            roll = np.degrees(np.arctan2(fingers[0], -fingers[1]))  # image-plane angle of the fingers from "up"
            assert abs(roll) <= views.max_roll_deg + 1e-9
    with pytest.raises(DataError, match="fraction in"):
        ViewRange(back_fraction=1.5)


def test_complete_folder_is_reused_and_interrupted_run_is_redone(tiny_root, tmp_path):
    again = synthesize(None, tiny_root, N_TRAIN, N_EVAL, seed=0, progress=False, log=None)
    assert again.reused
    out = tmp_path / "set"
    partial = tmp_path / "set.partial"
    partial.mkdir()
    (partial / PARTIAL_TAG).touch()
    (partial / "training_xyz.json").write_text("[[")  # what an interrupted run leaves
    result = synthesize(None, out, 1, 1, seed=0, progress=False, log=None)
    assert not result.reused and not partial.exists() and (out / MARKER).is_file()
    assert _json(out, "training_xyz.json").shape == (1, 21, 3)
    # a different request replaces our own older folder
    assert synthesize(None, out, 2, 1, seed=0, progress=False, log=None).n_train == 2
    assert _json(out, "training_xyz.json").shape == (2, 21, 3)


def test_refuses_to_overwrite_foreign_folders(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="not written by `handmesh synth`"):
        synthesize(None, foreign, 1, 1, progress=False, log=None)
    assert (foreign / "notes.txt").read_text() == "keep me"
    with pytest.raises(DataError, match="at least 1"):
        synthesize(None, tmp_path / "x", 0, 1, progress=False, log=None)


def test_renderer_follows_opencv_pixel_centres():
    """A small square whose centre projects to (u, v) renders with its coverage centred at (u, v)."""
    from handmesh.data.synth_render import HandScene, sample_look

    scene = HandScene(64)
    K = np.array([[300.0, 0, 30.3], [0, 300.0, 33.6], [0, 0, 1]])
    try:
        for u, v in ((20.0, 41.0), (37.5, 25.25)):
            z = 0.5
            centre = np.array([(u - K[0, 2]) * z / K[0, 0], (v - K[1, 2]) * z / K[1, 1], z])
            half = 6 * z / K[0, 0]  # 6 px
            corners = centre + np.array([[-half, -half, 0], [half, -half, 0], [half, half, 0], [-half, half, 0]])
            layer = scene.render(corners, np.array([[0, 1, 2], [0, 2, 3]]), np.full((4, 3), 0.7), K,
                                 sample_look(np.random.default_rng(0)))
            rows, cols = np.mgrid[:64, :64]
            weight = layer.alpha.sum()
            assert abs((layer.alpha * cols).sum() / weight - u) < 0.05
            assert abs((layer.alpha * rows).sum() / weight - v) < 0.05
            assert abs(weight - 144) < 2  # 12 x 12 px
    finally:
        scene.close()


def test_marker_records_the_hand_model_and_a_stale_set_is_regenerated_with_the_reason(tmp_path):
    from handmesh.data.synth import SYNTH_FORMAT_VERSION
    from handmesh.mano_file import STANDIN_VERSION

    out = tmp_path / "set"
    synthesize(None, out, 1, 1, seed=0, progress=False, log=None)
    marker = orjson.loads((out / MARKER).read_bytes())
    assert marker["format_version"] == SYNTH_FORMAT_VERSION and marker["standin_version"] == STANDIN_VERSION
    assert len(marker["hand_model_sha1"]) == 40
    stale = {"format_version": SYNTH_FORMAT_VERSION - 1, "standin_version": None, "hand_model_sha1": "0" * 40}
    expected = {"format_version": "synthetic data format", "standin_version": "stand-in version unrecorded",
                "hand_model_sha1": "another hand model"}
    for key, value in stale.items():
        old = {**marker, key: value}
        if value is None:
            old.pop(key)  # a marker written before handmesh recorded the stand-in's version
        (out / MARKER).write_bytes(orjson.dumps(old))
        messages = []
        result = synthesize(None, out, 1, 1, seed=0, progress=False, log=messages.append)
        assert not result.reused, key
        assert any(m.startswith(f"regenerating {out}") and expected[key] in m for m in messages), (key, messages)
        assert orjson.loads((out / MARKER).read_bytes())[key] == marker[key]
    messages = []
    assert synthesize(None, out, 1, 1, seed=0, progress=False, log=messages.append).reused  # never silently redone
    assert not any("regenerating" in m for m in messages)
