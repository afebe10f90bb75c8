"""Assemble the stand-in model as a MANO file dict (right hand; the left is its mirror image) and write it the
way MANO's own files are written: a protocol-2 pickle of a dict, with a scipy sparse `J_regressor`."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
from scipy.sparse import csc_matrix

from handmesh.atomic import write_bytes_atomic
from handmesh.joints import MANO_PARENTS
from handmesh.mano_file import DEFAULT_STANDIN_DIR, FILE_NAMES, STANDIN_KEY, STANDIN_VERSION, STANDIN_VERSION_KEY
from handmesh.progress import progress_bar
from handmesh.standin.anatomy import Anatomy, skeleton
from handmesh.standin.grasps import grasp_set, pose_pca
from handmesh.standin.mesh import build_mesh
from handmesh.standin.rig import joint_regressor, pose_correctives, shape_directions, skinning_weights

STANDIN_NOTE = "handmesh stand-in hand model; not MANO"  # the value of STANDIN_KEY in the stand-in's files
PICKLE_PROTOCOL = 2  # as the Python-2 originals
ROOT_PARENT = 4294967295  # MANO's kintree_table marks the root's parent with 2**32 - 1
SIDES = ("right", "left")


def _right_hand(progress: bool = False) -> dict:
    with progress_bar(total=4, desc="building the stand-in hand model", disable=not progress, leave=False) as bar:
        anatomy = Anatomy.default()
        mesh = build_mesh(anatomy)
        bar.update()
        regressor = joint_regressor(mesh, skeleton())
        joints = regressor @ mesh.vertices  # (16, 3) metres: where the file's joints really are
        weights = skinning_weights(mesh, anatomy)
        bar.update()
        shapedirs = shape_directions(mesh, anatomy, weights, joints)
        posedirs = pose_correctives(mesh, anatomy, joints, weights)
        bar.update()
        mean, components, coefficients = pose_pca(grasp_set(anatomy))
        bar.update()
    return {
        "v_template": mesh.vertices,  # (778, 3) float64 metres
        "f": mesh.faces.astype(np.uint32),  # (1538, 3)
        "J_regressor": regressor,  # (16, 778) csc
        "kintree_table": np.array([[ROOT_PARENT, *MANO_PARENTS[1:]], list(range(16))], dtype=np.int64),  # (2, 16)
        "weights": weights,  # (778, 16)
        "shapedirs": shapedirs,  # (778, 3, 10)
        "posedirs": posedirs,  # (778, 3, 135)
        "hands_components": components,  # (45, 45)
        "hands_mean": mean,  # (45,)
        "hands_coeffs": coefficients,  # (N, 45)
        "J": joints,  # (16, 3)
        "bs_style": "lbs",
        "bs_type": "lrotmin",
        STANDIN_KEY: STANDIN_NOTE,
        STANDIN_VERSION_KEY: STANDIN_VERSION,  # int: renewed copies replace older ones (mano_file.resolve_mano_dir)
    }


def mirror(model: dict) -> dict:
    """The other hand: x -> -x. Faces reverse their winding; axis-angle poses map (x, y, z) -> (x, -y, -z)."""
    flip = np.array([-1.0, 1.0, 1.0])
    rotation_sign = np.outer(flip, flip).ravel()  # (9,) (M R M)_rc = m_r m_c R_rc for M = diag(flip)
    axis_angle_sign = np.tile([1.0, -1.0, -1.0], 15)  # (45,)
    posedirs = model["posedirs"] * flip[None, :, None] * np.tile(rotation_sign, 15)[None, None, :]
    return {
        **model,
        "v_template": model["v_template"] * flip,
        "f": np.ascontiguousarray(model["f"][:, ::-1]),
        "J_regressor": csc_matrix(model["J_regressor"]),
        "shapedirs": model["shapedirs"] * flip[None, :, None],
        "posedirs": posedirs,
        "hands_components": model["hands_components"] * axis_angle_sign,
        "hands_mean": model["hands_mean"] * axis_angle_sign,
        "J": model["J"] * flip,
    }


def build_standin(side: str = "right") -> dict:
    """The stand-in model for `side` ("right" or "left") as the dict a MANO pickle holds."""
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    right = _right_hand()
    return right if side == "right" else mirror(right)


def write_standin(out_dir: str | os.PathLike = DEFAULT_STANDIN_DIR, progress: bool = True) -> list[Path]:
    """Write MANO_RIGHT.pkl and MANO_LEFT.pkl into `out_dir` (created if needed); returns their paths.
    `progress` shows a progress bar while the model is built (a few seconds)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    right = _right_hand(progress)
    paths = []
    for side, model in (("right", right), ("left", mirror(right))):
        path = out_dir / FILE_NAMES[side]
        write_bytes_atomic(path, pickle.dumps(model, protocol=PICKLE_PROTOCOL))
        paths.append(path)
    return paths
