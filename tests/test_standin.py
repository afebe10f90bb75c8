"""The stand-in hand model: MANO's file format exactly, a hand's shape, and a rig that moves like one."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import warnings
from collections import Counter

import numpy as np
import pytest
import scipy.sparse
import torch
from scipy.spatial import cKDTree

from handmesh.joints import FINGERTIP_VERTEX_IDS, MANO_PARENTS
from handmesh.mano_file import STANDIN_KEY, STANDIN_VERSION, STANDIN_VERSION_KEY
from handmesh.standin import write_standin

torch.set_num_threads(2)

SHAPES = {
    "v_template": ((778, 3), np.float64),
    "f": ((1538, 3), np.uint32),
    "kintree_table": ((2, 16), np.int64),
    "weights": ((778, 16), np.float64),
    "shapedirs": ((778, 3, 10), np.float64),
    "posedirs": ((778, 3, 135), np.float64),
    "hands_components": ((45, 45), np.float64),
    "hands_mean": ((45,), np.float64),
    "J": ((16, 3), np.float64),
}
# Finger (FreiHAND order: thumb, index, middle, ring, pinky) -> its MANO joints.
FINGER_JOINTS = {0: (13, 14, 15), 1: (1, 2, 3), 2: (4, 5, 6), 3: (10, 11, 12), 4: (7, 8, 9)}


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    folder = tmp_path_factory.mktemp("standin")
    paths = write_standin(folder, progress=False)
    models = {side: pickle.loads(path.read_bytes(), encoding="latin1") for side, path in zip(("right", "left"), paths)}
    return folder, paths, models


@pytest.fixture(scope="module")
def right(written):
    return written[2]["right"]


def _lbs(model: dict, hand_pose: np.ndarray, betas: np.ndarray | None = None) -> np.ndarray:
    """(778, 3) vertices posed by smplx's own LBS from the file's arrays; hand_pose (45,) axis-angle."""
    from smplx.lbs import lbs

    f64 = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float64)  # noqa: E731
    pose = torch.cat([torch.zeros(3, dtype=torch.float64), f64(hand_pose)])[None]
    vertices, _ = lbs(
        f64(np.zeros(10) if betas is None else betas)[None], pose, f64(model["v_template"]), f64(model["shapedirs"]),
        f64(model["posedirs"].reshape(-1, 135).T), f64(model["J_regressor"].toarray()),
        torch.tensor([-1, *MANO_PARENTS[1:]]), f64(model["weights"]),
    )
    return vertices[0].numpy()


def _piercings(v: np.ndarray, f: np.ndarray) -> int:
    """How many (edge, triangle) pairs of the mesh cross, the triangle not touching the edge: 0 for a surface
    without self-intersections."""
    edges = np.unique(np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1), axis=0)
    centres = v[f].mean(axis=1)
    reach = np.linalg.norm(v[f] - centres[:, None], axis=2).max()
    half = np.linalg.norm(v[edges[:, 0]] - v[edges[:, 1]], axis=1).max() / 2
    pairs = cKDTree(v[edges].mean(axis=1)).query_ball_tree(cKDTree(centres), reach + half)
    e_ids = np.repeat(np.arange(len(edges)), [len(p) for p in pairs])
    t_ids = np.concatenate([np.array(p, dtype=np.int64) for p in pairs])
    touching = (f[t_ids] == edges[e_ids, :1]).any(1) | (f[t_ids] == edges[e_ids, 1:]).any(1)
    e_ids, t_ids = e_ids[~touching], t_ids[~touching]
    p, d = v[edges[e_ids, 0]], v[edges[e_ids, 1]] - v[edges[e_ids, 0]]
    a, b, c = (v[f[t_ids, i]] for i in range(3))
    e1, e2 = b - a, c - a  # Moeller-Trumbore, segment version
    h = np.cross(d, e2)
    det = np.einsum("ij,ij->i", e1, h)
    solvable = np.abs(det) > 1e-18  # not parallel
    inv = 1.0 / np.where(solvable, det, np.inf)
    s = p - a
    q = np.cross(s, e1)
    u, w, t = (inv * np.einsum("ij,ij->i", x, y) for x, y in ((s, h), (d, q), (e2, q)))
    return int(np.sum((u >= 0) & (w >= 0) & (u + w <= 1) & (t >= 0) & (t <= 1) & solvable))


def test_every_key_with_mano_shapes_and_dtypes(right):
    for key, (shape, dtype) in SHAPES.items():
        assert right[key].shape == shape and right[key].dtype == dtype, key
    assert isinstance(right["J_regressor"], scipy.sparse.csc_matrix) and right["J_regressor"].shape == (16, 778)
    assert right["hands_coeffs"].shape[1] == 45 and right["hands_coeffs"].shape[0] >= 45
    assert right["bs_style"] == "lbs" and right["bs_type"] == "lrotmin"
    assert right[STANDIN_KEY] == "handmesh stand-in hand model; not MANO"
    assert type(right[STANDIN_VERSION_KEY]) is int and right[STANDIN_VERSION_KEY] == STANDIN_VERSION
    assert right["kintree_table"][0, 0] == 4294967295
    assert tuple(right["kintree_table"][0, 1:]) == MANO_PARENTS[1:]
    assert tuple(right["kintree_table"][1]) == tuple(range(16))
    np.testing.assert_allclose(right["weights"].sum(axis=1), 1.0, atol=1e-12)
    assert right["weights"].min() >= 0.0
    np.testing.assert_allclose(np.asarray(right["J_regressor"].sum(axis=1)).ravel(), 1.0, atol=1e-12)
    np.testing.assert_allclose(right["J"], right["J_regressor"] @ right["v_template"], atol=1e-12)


def test_mesh_is_a_disc_open_only_at_the_wrist_and_wound_outward(right):
    import trimesh

    faces = right["f"].astype(np.int64)
    assert np.array_equal(np.unique(faces), np.arange(778))  # every vertex used
    edges = Counter(map(tuple, np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), 1)))
    assert set(edges.values()) == {1, 2}
    boundary = [e for e, n in edges.items() if n == 1]
    assert len(boundary) == 16
    loop_vertices = Counter(v for e in boundary for v in e)
    assert set(loop_vertices.values()) == {2} and len(loop_vertices) == 16  # one simple loop of 16 edges
    mesh = trimesh.Trimesh(right["v_template"], faces, process=False)
    assert mesh.is_winding_consistent and mesh.euler_number == 1
    # Closed with a fan over the wrist hole, the volume is positive: faces wind outward.
    loop = np.array(sorted(loop_vertices))
    centre = len(right["v_template"])
    directed = {(a, b) for a, b in np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
                if (min(a, b), max(a, b)) in set(boundary)}
    cap = [(b, a, centre) for a, b in directed]
    closed = trimesh.Trimesh(np.vstack([right["v_template"], right["v_template"][loop].mean(0)]),
                             np.vstack([faces, cap]), process=False)
    assert closed.is_watertight and closed.volume > 0
    assert 2.5e-4 < closed.volume < 6e-4  # m^3: an adult hand is about 400 ml


def test_rest_surface_does_not_cross_itself(right):
    faces = right["f"].astype(np.int64)
    assert _piercings(right["v_template"], faces) == 0
    # The check sees a crossing: push the index finger's last two phalanges into the middle finger.
    moved = right["v_template"].copy()
    moved[right["weights"][:, [2, 3]].sum(axis=1) > 0.5] += [0.0, 0.0, -0.02]
    assert _piercings(moved, faces) > 10


def test_two_writes_give_identical_bytes_whatever_the_blas_threads(written, tmp_path):
    _, paths, _ = written
    again = write_standin(tmp_path / "again", progress=False)
    assert [p.name for p in again] == ["MANO_RIGHT.pkl", "MANO_LEFT.pkl"]
    for first, second in zip(paths, again):
        assert first.read_bytes() == second.read_bytes()
    # Another process with one BLAS thread (the module's build used the default count) writes the same bytes.
    one = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "handmesh.cli", "standin", "--out", str(tmp_path / "one")], check=True,
                   env={**os.environ, **one}, capture_output=True)
    for first in paths:
        assert first.read_bytes() == (tmp_path / "one" / first.name).read_bytes()


def _finger_vertices(model: dict, finger: int) -> np.ndarray:
    """Ids of the vertices that bending the finger's first joint moves (weight > 0 on its bones)."""
    joints = FINGER_JOINTS[finger]
    return np.flatnonzero(model["weights"][:, list(joints)].sum(axis=1) > 0.5)


def test_fingertip_vertices_are_the_distal_extremes_of_their_fingers(right):
    v, joints = right["v_template"], right["J"]
    for finger, tip in enumerate(FINGERTIP_VERTEX_IDS):
        base, _, last = FINGER_JOINTS[finger]
        direction = joints[last] - joints[base]
        direction /= np.linalg.norm(direction)
        ids = _finger_vertices(right, finger)
        assert tip in ids
        assert np.argmax(v[ids] @ direction) == np.flatnonzero(ids == tip)[0]
        assert 0.015 < np.linalg.norm(v[tip] - joints[last]) < 0.035  # last joint to tip: a distal phalanx


def test_proportions_of_an_adult_hand(right):
    v, joints = right["v_template"], right["J"]
    wrist_to_middle_tip = np.linalg.norm(v[FINGERTIP_VERTEX_IDS[2]] - joints[0])
    assert 0.175 < wrist_to_middle_tip < 0.195
    widths = []
    for finger in (1, 2, 3, 4):  # width across the middle phalanx
        _, pip, dip = FINGER_JOINTS[finger]
        centre = 0.5 * (joints[pip] + joints[dip])
        axis = (joints[dip] - joints[pip]) / np.linalg.norm(joints[dip] - joints[pip])
        rel = v - centre
        radial = rel - np.outer(rel @ axis, axis)
        radial = radial[(np.abs(rel @ axis) < 0.004) & (np.linalg.norm(radial, axis=1) < 0.015)]
        widths.append(2 * np.max(np.abs(radial[:, 2])))
    assert all(0.012 < w < 0.021 for w in widths), widths
    # MANO's frame: fingers along -x from the wrist, palm facing -y, thumb toward +z.
    assert v[FINGERTIP_VERTEX_IDS[2], 0] < joints[0, 0] - 0.15
    assert joints[14, 2] > joints[1, 2] > joints[4, 2] > joints[10, 2] > joints[7, 2]


def test_bending_the_index_pip_moves_only_the_index_beyond_it(right):
    pose = np.zeros(45)
    pose[3:6] = [0.0, 0.0, np.radians(60)]  # joint 2 (index PIP), flexion about z
    rest = _lbs(right, np.zeros(45))
    np.testing.assert_allclose(rest, right["v_template"], atol=1e-9)  # the flat pose is the template
    moved = np.linalg.norm(_lbs(right, pose) - rest, axis=1) > 1e-6
    joints = right["J"]
    axis = (joints[3] - joints[2]) / np.linalg.norm(joints[3] - joints[2])
    # Distal to the PIP, or within reach of its weight blend and pose corrective (30 mm).
    beyond = (right["v_template"] - joints[2]) @ axis > -0.03
    index = np.zeros(778, dtype=bool)
    index[_finger_vertices(right, 1)] = True
    assert moved.sum() > 40
    assert not np.any(moved & ~(index & beyond))
    # The tip bends toward the palm (-y) and stays at the same distance from the PIP.
    tip = FINGERTIP_VERTEX_IDS[1]
    posed = _lbs(right, pose)
    assert posed[tip, 1] < rest[tip, 1] - 0.02
    assert np.linalg.norm(posed[tip] - joints[2]) == pytest.approx(np.linalg.norm(rest[tip] - joints[2]), abs=2e-3)


def test_hands_components_are_a_pca_of_curled_grasps_scaled_by_their_spread(right):
    components, coeffs, mean = right["hands_components"], right["hands_coeffs"], right["hands_mean"]
    norms = np.linalg.norm(components, axis=1)
    directions = components / norms[:, None]
    np.testing.assert_allclose(directions @ directions.T, np.eye(45), atol=1e-10)
    assert np.all(np.diff(norms) <= 1e-12) and not np.allclose(norms, 1.0)  # MANO's rows: falling spreads, not unit
    assert norms[0] > 2 * norms[5]
    # Each row's length is the spread of the example poses (mean + coeffs @ components) along its direction.
    poses = mean + coeffs @ components
    np.testing.assert_allclose((poses - poses.mean(axis=0)) @ directions.T, coeffs * norms, atol=1e-9)
    np.testing.assert_allclose(((poses - mean) @ directions.T).std(axis=0), norms, rtol=1e-6)
    variances = norms ** 2
    assert variances[:6].sum() > 0.8 * variances.sum()  # a few components carry the grasps
    flexion = mean.reshape(15, 3)[:12, 2]
    assert np.all(flexion > 0.1) and np.all(flexion < 1.0)  # the mean hand is slightly curled


def _grasps(model: dict, count: int = 64, components: int = 6, seed: int = 0) -> np.ndarray:
    """(count, 45) natural grasps: hands_mean + N(0, 1) coefficients of the first PCA rows (rows carry the spread)."""
    coefficients = np.random.default_rng(seed).normal(size=(count, components))
    return model["hands_mean"] + coefficients @ model["hands_components"][:components]


def _kinematic_and_regressed(model: dict, hand_poses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(B, 16, 3) smplx's kinematic joints and (B, 16, 3) `J_regressor @ posed vertices`, metres."""
    from smplx.lbs import lbs

    f64 = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float64)  # noqa: E731
    count = len(hand_poses)
    pose = torch.cat([torch.zeros(count, 3, dtype=torch.float64), f64(hand_poses)], dim=1)
    regressor = f64(model["J_regressor"].toarray())
    vertices, joints = lbs(
        torch.zeros(count, 10, dtype=torch.float64), pose, f64(model["v_template"]), f64(model["shapedirs"]),
        f64(model["posedirs"].reshape(-1, 135).T), regressor, torch.tensor([-1, *MANO_PARENTS[1:]]),
        f64(model["weights"]),
    )
    return joints.numpy(), torch.einsum("jv,bvc->bjc", regressor, vertices).numpy()


def test_joint_regressor_spreads_over_the_skin_around_each_joint(right):
    from handmesh.standin.anatomy import skeleton

    regressor = right["J_regressor"].tocsr()
    assert np.all(np.diff(regressor.indptr) >= 50)  # MANO: 93-196 vertices per joint
    assert regressor.data.min() >= 0.0
    # The rest joints are the hand's joint centres, and the kinematic tree starts from them.
    np.testing.assert_allclose(regressor @ right["v_template"], skeleton(), atol=1e-3)
    for j, row in enumerate(regressor):
        reach = np.linalg.norm(right["v_template"][row.indices] - right["J"][j], axis=1)
        assert 0.005 < np.average(reach, weights=row.data) < 0.03  # a ring of skin, not a vertex on the joint


def test_regressed_joints_leave_the_bone_pivots_on_natural_grasps(right):
    kinematic, regressed = _kinematic_and_regressed(right, np.zeros((1, 45)))
    np.testing.assert_allclose(regressed, kinematic, atol=1e-9)  # the rest pose: the same joints
    kinematic, regressed = _kinematic_and_regressed(right, _grasps(right))
    distance = np.linalg.norm(regressed - kinematic, axis=-1)  # (64, 16) metres
    assert distance.mean() > 0.002  # MANO: 4.25 mm; FreiHAND's keypoints are the regressed ones
    assert distance.max() < 0.025


def test_left_is_the_mirror_image_of_the_right(written):
    right, left = written[2]["right"], written[2]["left"]
    flip = np.array([-1.0, 1.0, 1.0])
    np.testing.assert_array_equal(left["v_template"], right["v_template"] * flip)
    np.testing.assert_array_equal(left["f"], right["f"][:, ::-1])
    np.testing.assert_array_equal(left["weights"], right["weights"])
    assert (left["J_regressor"] != right["J_regressor"]).nnz == 0
    aa = np.tile([1.0, -1.0, -1.0], 15)
    np.testing.assert_array_equal(left["hands_mean"], right["hands_mean"] * aa)
    # Posing the left model with the mirrored pose and shape gives the mirror of the posed right hand.
    rng = np.random.default_rng(0)
    pose, betas = rng.normal(0.0, 0.4, 45), rng.normal(0.0, 1.0, 10)
    np.testing.assert_allclose(_lbs(left, pose * aa, betas), _lbs(right, pose, betas) * flip, atol=1e-10)


def test_loads_in_smplx_and_the_handmesh_loader(written):
    import smplx

    folder = written[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = smplx.MANO(model_path=str(folder), is_rhand=True, use_pca=False, flat_hand_mean=True)
    output = model(hand_pose=torch.zeros(1, 45), global_orient=torch.zeros(1, 3), betas=torch.zeros(1, 10))
    np.testing.assert_allclose(output.vertices[0].detach().numpy(), written[2]["right"]["v_template"], atol=1e-6)

    from handmesh.mano_file import load_mano_file

    for side, path in zip(("right", "left"), written[1]):
        loaded = load_mano_file(path, side=side)
        assert loaded.is_standin and loaded.side == side


def test_pose_correctives_have_manos_size_and_bulge_around_a_bent_joint(right):
    rms = np.sqrt(np.mean(right["posedirs"] ** 2))
    assert 0.12e-3 < rms < 0.48e-3  # MANO's: 0.24 mm
    flexion = np.radians(90)
    rotation = np.array([[np.cos(flexion), -np.sin(flexion), 0.0], [np.sin(flexion), np.cos(flexion), 0.0],
                         [0.0, 0.0, 1.0]])  # about z: the index PIP's flexion axis in MANO's frame
    feature = np.zeros(135)
    feature[9:18] = (rotation - np.eye(3)).ravel()  # joint 2 is the second of joints 1..15
    offsets = right["posedirs"] @ feature  # (778, 3) metres, MANO's convention
    size = np.linalg.norm(offsets, axis=1)
    assert 0.002 < size.max() < 0.01
    moved = size > 1e-7
    assert np.all(right["weights"][moved][:, [1, 2, 3]].sum(axis=1) > 0.99)  # the index finger only
    rel = right["v_template"] - right["J"][2]
    assert np.all(np.linalg.norm(rel[size > 1e-4], axis=1) < 0.05)  # around the joint (tails below 0.1 mm)
    # Near the joint the palm side (-y) swells outward and the back (+y) is pushed out over the knuckle.
    near = moved & (np.abs(rel[:, 0]) < 0.012)
    palm_side, back = near & (rel[:, 1] < -0.004), near & (rel[:, 1] > 0.004)
    assert offsets[palm_side, 1].min() < -0.001 and offsets[back, 1].max() > 0.001
    assert np.abs(right["posedirs"] @ np.zeros(135)).max() == 0.0


def test_shape_directions_keep_a_plausible_hand(right):
    v, tip = right["v_template"], FINGERTIP_VERTEX_IDS[2]
    def length(verts: np.ndarray) -> float:  # wrist joint to middle fingertip, metres
        return float(np.linalg.norm(verts[tip] - (right["J_regressor"] @ verts)[0]))

    for beta in range(10):
        for value in (-2.0, 2.0):
            shaped = v + right["shapedirs"][:, :, beta] * value
            change = np.linalg.norm(shaped - v, axis=1).max()
            assert 0.001 < change < 0.03, (beta, value, change)
            assert 0.15 < length(shaped) < 0.22
    # Beta 0 is overall size: about 6 % per unit, about the wrist.
    assert length(v + right["shapedirs"][:, :, 0]) / length(v) == pytest.approx(1.06, abs=0.01)


def test_command_refuses_a_file_as_output_folder(tmp_path, capsys):
    from handmesh.cli import main

    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    assert main(["standin", "--out", str(blocker)]) == 2
    assert "expected a folder" in capsys.readouterr().err
