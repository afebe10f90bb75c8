"""MANO written out in numpy from the file's arrays, independent of handmesh's layer, and a perturbed MANO-format model.

`posed_vertices` is MANO's linear blend skinning as the model's own code defines it (shape blend shapes, joints
regressed from the shaped rest mesh, pose correctives from (R - I), bone transforms along the kinematic tree);
`freihand_keypoints` is the FreiHAND toolbox's keypoint definition (`utils/model.py` `_calc_coords` and
`utils/mano_utils.py` `get_keypoints_from_mesh_ch`): the joint regressor applied to the posed mesh, plus 5 vertices.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

# FreiHAND keypoint <- MANO joint (toolbox's `mapping`, inverted) and <- fingertip vertex (`kpId2vertices`).
_FROM_JOINT = {0: 0, 5: 1, 6: 2, 7: 3, 9: 4, 10: 5, 11: 6, 17: 7, 18: 8, 19: 9, 13: 10, 14: 11, 15: 12, 1: 13, 2: 14,
               3: 15}
_FROM_VERTEX = {4: 744, 8: 320, 12: 443, 16: 555, 20: 672}


def load_arrays(path: Path) -> dict:
    """The MANO pickle's arrays as float64 numpy (dense J_regressor), read with plain pickle."""
    with open(path, "rb") as handle:
        data = pickle.load(handle, encoding="latin1")
    arrays = {key: np.asarray(data[key].toarray() if hasattr(data[key], "toarray") else data[key], dtype=np.float64)
              for key in ("v_template", "J_regressor", "weights", "shapedirs", "posedirs", "hands_mean",
                          "hands_components")}
    arrays["parents"] = np.asarray(data["kintree_table"][0], dtype=np.int64)
    arrays["raw"] = data
    return arrays


def posed_vertices(model: dict, rotations: np.ndarray, betas: np.ndarray) -> np.ndarray:
    """rotations (16, 3, 3) full joint rotations (flat hand = identity), betas (10,) -> (778, 3) posed vertices."""
    v_shaped = model["v_template"] + model["shapedirs"] @ betas  # (778, 3)
    joints = model["J_regressor"] @ v_shaped  # (16, 3) rest joints
    v_posed = v_shaped + model["posedirs"] @ (rotations[1:] - np.eye(3)).reshape(-1)  # (778, 3)
    world = np.zeros((16, 4, 4))
    for j in range(16):
        local = np.eye(4)
        local[:3, :3] = rotations[j]
        local[:3, 3] = joints[j] - (joints[model["parents"][j]] if j else 0)
        world[j] = world[model["parents"][j]] @ local if j else local
    skinning = world.copy()
    skinning[:, :3, 3] -= np.einsum("jab,jb->ja", world[:, :3, :3], joints)  # bone transforms relative to the rest pose
    per_vertex = np.einsum("vj,jab->vab", model["weights"], skinning)  # (778, 4, 4)
    return np.einsum("vab,vb->va", per_vertex[:, :3, :3], v_posed) + per_vertex[:, :3, 3]


def freihand_keypoints(model: dict, vertices: np.ndarray) -> np.ndarray:
    """(778, 3) posed vertices -> (21, 3) FreiHAND keypoints: J_regressor @ vertices and 5 vertices, FreiHAND order."""
    regressed = model["J_regressor"] @ vertices  # (16, 3)
    keypoints = np.zeros((21, 3))
    for k, joint in _FROM_JOINT.items():
        keypoints[k] = regressed[joint]
    for k, vertex in _FROM_VERTEX.items():
        keypoints[k] = vertices[vertex]
    return keypoints


def axis_angle(values: np.ndarray) -> np.ndarray:
    """(..., 3) axis-angle -> (..., 3, 3)."""
    return Rotation.from_rotvec(values.reshape(-1, 3)).as_matrix().reshape(*values.shape[:-1], 3, 3)


def write_perturbed(standin_dir: Path, out_dir: Path, seed: int = 0) -> Path:
    """A different MANO-format right hand made from the stand-in: its rest fingers splayed, its rest thumb turned and
    its hands_mean changed. The rest mesh is the stand-in posed that way, so the rig stays consistent. Returns out_dir.
    """
    model = load_arrays(standin_dir / "MANO_RIGHT.pkl")
    joints = model["J_regressor"] @ model["v_template"]
    fingers = joints[4] - joints[0]
    normal = np.cross(joints[1] - joints[7], fingers)
    normal /= np.linalg.norm(normal)
    side = np.cross(fingers, normal)
    side /= np.linalg.norm(side)
    rotvec = np.zeros((16, 3))
    for joint, angle in ((1, 0.15), (4, 0.03), (10, -0.12), (7, -0.25)):  # splay the MCPs in the palm plane
        rotvec[joint] = angle * normal
    rotvec[13] = 0.35 * side - 0.25 * normal  # thumb CMC turned about the hand's width and its normal
    rotations = axis_angle(rotvec)
    data = dict(model["raw"])
    data["v_template"] = posed_vertices(model, rotations, np.zeros(10))
    data["J"] = model["J_regressor"] @ data["v_template"]
    data["hands_mean"] = model["hands_mean"] + np.random.default_rng(seed).normal(0.0, 0.2, 45)
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "MANO_RIGHT.pkl", "wb") as handle:
        pickle.dump(data, handle, protocol=2)
    return out_dir
