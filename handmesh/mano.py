"""The MANO layer: pose and shape -> 778 vertices and the 21 FreiHAND keypoints, in metres.

A thin module around smplx's pure `lbs()` (linear blend skinning with shape and pose blend shapes): smplx does the
skinning; this adds what it lacks: loading either form of the MANO file without chumpy (see `mano_file.py`), FreiHAND's
keypoint definition, and the left-hand quirk of the original files.

Keypoints are FreiHAND's (its toolbox's `_calc_coords`): the joint regressor applied to the posed mesh, plus five
fingertip vertices, in FreiHAND order:
    keypoints = [J_regressor @ V ; V[744, 320, 443, 555, 672]][FREIHAND_FROM_MANO],  V = shaped, posed, skinned vertices
They are not the kinematic chain's joints that `lbs()` returns (the rest joints carried by the bone transforms): those
drive the skinning and are kept as `ManoOutput.kinematic_joints`, but no keypoint is taken from them.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from smplx.lbs import lbs
from torch import nn

from handmesh.geometry import axis_angle_to_rotmat
from handmesh.joints import FINGERTIP_VERTEX_IDS, FREIHAND_FROM_MANO, NUM_BETAS, NUM_MANO_JOINTS
from handmesh.mano_file import FILE_NAMES, ManoModelData, load_mano_file


@dataclass
class ManoOutput:
    """Posed MANO hand in the model frame (the frame of `v_template`), metres."""

    vertices: torch.Tensor  # (B, 778, 3)
    keypoints: torch.Tensor  # (B, 21, 3) FreiHAND order and definition (J_regressor @ vertices, fingertip vertices)
    kinematic_joints: torch.Tensor  # (B, 16, 3) MANO order: the skinning's joint centres, NOT FreiHAND's keypoints


def _fix_left_shapedirs(left: ManoModelData, right_path: Path) -> np.ndarray:
    """The original MANO_LEFT.pkl has the x-row of `shapedirs` with the wrong sign (it equals the right hand's).

    Many codebases flip it when it matches the right file's; we do the same, so left and right shapes mirror.
    """
    if not right_path.is_file():
        return left.shapedirs
    right = load_mano_file(right_path)
    if np.abs(left.shapedirs[:, 0, :] - right.shapedirs[:, 0, :]).sum() < 1.0:
        fixed = left.shapedirs.copy()
        fixed[:, 0, :] *= -1
        return fixed
    return left.shapedirs


class ManoLayer(nn.Module):
    """Parameter-free MANO layer for regression: all model arrays are buffers (they move with `.to(device)`).

    Poses are full rotations (a flat hand is the identity), i.e. smplx's `flat_hand_mean=True`. FreiHAND's axis-angle
    annotations are relative to `hands_mean`: convert them with `pose_from_axis_angle(..., add_hands_mean=True)`.
    """

    def __init__(self, model: ManoModelData):
        super().__init__()
        self.side = model.side
        self.is_standin = model.is_standin
        self.source = model.describe()
        as_tensor = lambda array: torch.as_tensor(np.asarray(array), dtype=torch.float32)  # noqa: E731
        self.register_buffer("v_template", as_tensor(model.v_template), persistent=False)  # (778, 3)
        self.register_buffer("shapedirs", as_tensor(model.shapedirs), persistent=False)  # (778, 3, 10)
        posedirs = model.posedirs.reshape(-1, model.posedirs.shape[-1]).T  # (135, 778 * 3), smplx's layout
        self.register_buffer("posedirs", as_tensor(posedirs), persistent=False)
        self.register_buffer("J_regressor", as_tensor(model.J_regressor), persistent=False)  # (16, 778)
        self.register_buffer("lbs_weights", as_tensor(model.weights), persistent=False)  # (778, 16)
        self.register_buffer("parents", torch.as_tensor(model.parents, dtype=torch.long), persistent=False)
        self.register_buffer("hands_mean", as_tensor(model.hands_mean), persistent=False)  # (45,)
        self.register_buffer("hands_components", as_tensor(model.hands_components), persistent=False)  # (45, 45)
        self.register_buffer("faces", torch.as_tensor(model.faces, dtype=torch.long), persistent=False)  # (1538, 3)
        self.register_buffer("fingertip_ids", torch.tensor(FINGERTIP_VERTEX_IDS), persistent=False)
        self.register_buffer("freihand_order", torch.tensor(FREIHAND_FROM_MANO), persistent=False)

    @classmethod
    def from_dir(cls, mano_dir: str | os.PathLike, side: str = "right") -> "ManoLayer":
        """Load `MANO_RIGHT.pkl` or `MANO_LEFT.pkl` from a folder (see `mano_file.resolve_mano_dir` to find it)."""
        mano_dir = Path(mano_dir)
        model = load_mano_file(mano_dir / FILE_NAMES[side], side=side)
        if side == "left":
            shapedirs = _fix_left_shapedirs(model, mano_dir / FILE_NAMES["right"])
            model = dataclasses.replace(model, shapedirs=shapedirs)
        return cls(model)

    def pose_from_axis_angle(self, pose: torch.Tensor, add_hands_mean: bool = True) -> torch.Tensor:
        """(B, 48) axis-angle (3 global + 15 joints) -> (B, 16, 3, 3) rotations for `forward`.

        `add_hands_mean=True` reads the values as FreiHAND and smplx (`flat_hand_mean=False`) store them: finger
        rotations relative to the mean hand pose.
        """
        pose = pose.reshape(-1, NUM_MANO_JOINTS, 3)
        if add_hands_mean:
            offset = torch.cat([pose.new_zeros(3), self.hands_mean.to(pose.dtype)]).reshape(1, NUM_MANO_JOINTS, 3)
            pose = pose + offset
        return axis_angle_to_rotmat(pose)

    def pose_from_pca(self, global_orient: torch.Tensor, coefficients: torch.Tensor,
                      add_hands_mean: bool = True) -> torch.Tensor:
        """global_orient (B, 3) axis-angle, coefficients (B, K<=45) of `hands_components` -> (B, 16, 3, 3)."""
        fingers = coefficients @ self.hands_components[: coefficients.shape[-1]].to(coefficients.dtype)  # (B, 45)
        return self.pose_from_axis_angle(torch.cat([global_orient, fingers], dim=-1), add_hands_mean)

    def forward(self, pose: torch.Tensor, betas: torch.Tensor | None = None) -> ManoOutput:
        """pose (B, 16, 3, 3) rotations (global + 15 joints, MANO order), betas (B, 10) or None for the mean shape."""
        batch = pose.shape[0]
        if betas is None:
            betas = pose.new_zeros(batch, NUM_BETAS)
        regressor = self.J_regressor.to(pose.dtype)  # (16, 778)
        vertices, kinematic_joints = lbs(
            betas,
            pose.reshape(batch, NUM_MANO_JOINTS, 9),
            self.v_template.to(pose.dtype),
            self.shapedirs.to(pose.dtype),
            self.posedirs.to(pose.dtype),
            regressor,
            self.parents,
            self.lbs_weights.to(pose.dtype),
            pose2rot=False,
        )  # (B, 778, 3), (B, 16, 3)
        regressed = torch.einsum("jv,bvc->bjc", regressor, vertices)  # (B, 16, 3) = J_regressor @ posed vertices
        tips = vertices[:, self.fingertip_ids]  # (B, 5, 3)
        keypoints = torch.cat([regressed, tips], dim=1)[:, self.freihand_order]  # (B, 21, 3)
        return ManoOutput(vertices=vertices, keypoints=keypoints, kinematic_joints=kinematic_joints)
