"""The network as a plain nn.Module: image crop -> encoder -> regressor -> MANO -> camera-frame mesh and keypoints.

No Lightning and no data code here: training wraps it (`lit_module.py`), inference loads its weights without Lightning
(`inference.py`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Literal

import torch
from torch import nn

from handmesh.errors import HandmeshError
from handmesh.geometry import (
    in_float32,
    project_points,
    rot6d_to_rotmat,
    rotmat_to_rot6d,
    weak_perspective_to_translation,
)
from handmesh.joints import NUM_KEYPOINTS, NUM_POSE_PARAMS, ROOT_KEYPOINT
from handmesh.mano import ManoLayer
from handmesh.models.encoder import Encoder
from handmesh.models.keypoint_head import STAGE as KEYPOINT_STAGE, KeypointHead
from handmesh.models.regressor import build_regressor

NUM_FINGER_PARAMS = NUM_POSE_PARAMS - 3  # 45 axis-angle values of the 15 finger joints = MANO's PCA components

# Settings added after checkpoints began storing HandModelConfig, with the value that rebuilds the networks saved before
ADDED_LATER = {"pose_pca": 0, "keypoint_head": False}


@dataclass(frozen=True)
class HandModelConfig:
    """The network's settings: what a checkpoint stores and `HandModel` is rebuilt from. The defaults, here only, are
    the paper recipe's network; configs/*.yaml override them (docs/architecture.md, "Model choices").

    How training starts (`pretrained` weights, `drop_path_rate`) is not part of it: it does not change what the
    trained weights mean.
    """

    encoder: str = "fastvit_ma36"  # a timm FastViT name
    input_size: int = 224  # crop side S, pixels; a multiple of 32
    head: Literal["ief", "transformer"] = "ief"  # the regressor (models/regressor.py)
    # starting weak-perspective camera (s, tx, ty): a hand centred in the crop and spanning about half of it
    mean_camera: tuple[float, float, float] = (6.5, 0.0, 0.0)
    # 0: each finger joint's rotation in 6D; K > 0: the first K coefficients of MANO's pose PCA (around hands_mean)
    pose_pca: int = 0
    keypoint_head: bool = False  # 21 keypoint maps on a mid-level stage, read by the regressor (keypoint_head.py)

    def __post_init__(self):
        if self.input_size % 32 or self.input_size < 32:
            raise HandmeshError(f"input_size is {self.input_size}, expected a multiple of 32 (FastViT downsamples by "
                                "32), e.g. 128 or 224")
        if not 0 <= self.pose_pca <= NUM_FINGER_PARAMS:
            raise HandmeshError(f"pose_pca is {self.pose_pca}, expected 0 (each finger joint's rotation in 6D) or a "
                                f"number of MANO pose PCA components from 1 to {NUM_FINGER_PARAMS}")
        object.__setattr__(self, "mean_camera", tuple(float(value) for value in self.mean_camera))

    def as_dict(self) -> dict:
        """Plain values (lists, not tuples): what checkpoints store, loadable with torch.load(weights_only=True)."""
        values = asdict(self)
        values["mean_camera"] = list(self.mean_camera)
        return values

    @classmethod
    def from_dict(cls, values: dict) -> "HandModelConfig":
        """`as_dict()` values, also from older checkpoints (settings in ADDED_LATER may be missing)."""
        names = {field.name for field in fields(cls)}
        unknown = sorted(set(values) - names)
        missing = sorted(names - set(values) - set(ADDED_LATER))
        if unknown or missing:
            found = (f"; unknown {unknown}" if unknown else "") + (f"; missing {missing}" if missing else "")
            raise HandmeshError(f"network settings {values}: expected {sorted(names)}{found}. Use the handmesh "
                                "version that wrote them.")
        return cls(**{**ADDED_LATER, **values})


@dataclass
class HandOutput:
    """One batch of predictions. Metres unless noted; camera frame = the crop's camera (its K)."""

    vertices: torch.Tensor  # (B, 778, 3) camera frame
    keypoints_3d: torch.Tensor  # (B, 21, 3) camera frame, FreiHAND order
    keypoints_2d: torch.Tensor  # (B, 21, 2) pixels in the crop
    camera: torch.Tensor  # (B, 3) weak perspective (s, tx, ty)
    translation: torch.Tensor  # (B, 3) camera-frame position of the root (wrist)
    pose_rotmat: torch.Tensor  # (B, 16, 3, 3) full MANO rotations (flat hand = identity), MANO joint order
    betas: torch.Tensor  # (B, 10)
    vertices_rel: torch.Tensor  # (B, 778, 3) relative to the wrist keypoint
    keypoints_rel: torch.Tensor  # (B, 21, 3) relative to the wrist keypoint (row 0 is zero)
    keypoints_2d_heatmap: torch.Tensor | None = None  # (B, 21, 2) pixels from the keypoint head, None without one


class HandModel(nn.Module):
    """images (B, 3, S, S) RGB, uint8 or float in [0, 1] (see `Encoder`), K (B, 3, 3) crop intrinsics (pixels) ->
    `HandOutput`.

    `mano` is the MANO layer (its arrays are non-persistent buffers: checkpoints hold the network only); `config` the
    network (`HandModelConfig`, kept as `self.config` so a checkpoint can rebuild the same network). pose_pca K > 0
    regresses a low-dimensional pose space whose leading components (overall curl, spread) are learned first, which
    is what a short CPU run needs; keypoint_head locates the 21 keypoints in 2D (`KeypointHead`, supervised in 2D)
    and gives the regressor those positions next to the pooled features.
    pretrained / drop_path_rate: how training starts (see `Encoder`); None / 0.0 for inference.
    """

    def __init__(self, mano: ManoLayer, config: HandModelConfig = HandModelConfig(), pretrained: str | None = None,
                 drop_path_rate: float = 0.0):
        super().__init__()
        self.config = config
        self.input_size = config.input_size
        self.mean_camera = config.mean_camera
        self.pose_pca = config.pose_pca
        self.mano = mano
        self.encoder = Encoder(config.encoder, pretrained=pretrained, drop_path_rate=drop_path_rate)
        with torch.no_grad():
            mean_pose = mano.pose_from_axis_angle(torch.zeros(1, NUM_POSE_PARAMS), add_hands_mean=True)[0]  # (16, 3, 3)
        # pose layout: global rotation in 6D, then the fingers: 15 rotations in 6D, or `pose_pca` PCA coefficients
        pose_pca = config.pose_pca
        fingers = torch.zeros(pose_pca) if pose_pca else rotmat_to_rot6d(mean_pose[1:]).reshape(-1)  # 0 = hands_mean
        start = torch.cat([rotmat_to_rot6d(mean_pose[0]), fingers])
        self.keypoint_head = (KeypointHead(self.encoder.stage_channels(KEYPOINT_STAGE),
                                           self.encoder.stage_stride(KEYPOINT_STAGE)) if config.keypoint_head
                             else None)
        cue_dim = 2 * NUM_KEYPOINTS if config.keypoint_head else 0  # keypoint positions, crop units centred on the crop
        self.regressor = build_regressor(config.head, self.encoder.num_features, start, self.mean_camera,
                                         cue_dim=cue_dim)

    def pose_rotations(self, pose: torch.Tensor) -> torch.Tensor:
        """Regressed pose (B, P) -> (B, 16, 3, 3) full MANO rotations (see the layout in __init__)."""
        global_rotation = rot6d_to_rotmat(pose[:, :6])[:, None]  # (B, 1, 3, 3)
        if self.pose_pca:
            fingers = self.mano.pose_from_pca(pose.new_zeros(pose.shape[0], 3), pose[:, 6:], add_hands_mean=True)[:, 1:]
        else:
            fingers = rot6d_to_rotmat(pose[:, 6:].reshape(pose.shape[0], -1, 6))  # (B, 15, 3, 3)
        return torch.cat([global_rotation, fingers], dim=1)

    def forward(self, images: torch.Tensor, K: torch.Tensor) -> HandOutput:
        crop_size = images.shape[-1]
        if images.shape[-2] != crop_size:
            raise ValueError(f"expected square crops (B, 3, S, S), got {tuple(images.shape)}")
        heatmap_2d = None
        if self.keypoint_head is None:
            params = self.regressor(self.encoder(images))
        else:
            features, stage_features = self.encoder.forward_with_stage(images, KEYPOINT_STAGE)
            heatmap_2d = self.keypoint_head(stage_features)  # (B, 21, 2) px
            cues = (heatmap_2d / crop_size - 0.5).flatten(1)  # (B, 42) crop widths from the crop centre
            params = self.regressor(features, cues)
        return self.hand_from_parameters(params.pose, params.betas, params.camera, K.float(), crop_size, heatmap_2d)

    @in_float32
    def hand_from_parameters(self, pose_params: torch.Tensor, betas: torch.Tensor, camera: torch.Tensor,
                             K: torch.Tensor, crop_size: int, heatmap_2d: torch.Tensor | None = None) -> HandOutput:
        """Regressed (B, P) pose, (B, 10) betas, (B, 3) camera, K (B, 3, 3) pixels -> `HandOutput`: MANO and the
        camera, in float32 whatever the autocast (half precision would round the vertices by millimetres)."""
        pose = self.pose_rotations(pose_params)  # (B, 16, 3, 3)
        mano = self.mano(pose, betas)
        root = mano.keypoints[:, ROOT_KEYPOINT:ROOT_KEYPOINT + 1]  # (B, 1, 3) model frame
        vertices_rel = mano.vertices - root  # (B, 778, 3)
        keypoints_rel = mano.keypoints - root  # (B, 21, 3)
        translation = weak_perspective_to_translation(camera, K, crop_size)  # (B, 3)
        keypoints_3d = keypoints_rel + translation[:, None]
        return HandOutput(
            vertices=vertices_rel + translation[:, None],
            keypoints_3d=keypoints_3d,
            keypoints_2d=project_points(keypoints_3d, K),  # (B, 21, 2) pixels
            camera=camera,
            translation=translation,
            pose_rotmat=pose,
            betas=betas,
            vertices_rel=vertices_rel,
            keypoints_rel=keypoints_rel,
            keypoints_2d_heatmap=heatmap_2d,
        )

    def reparameterize(self) -> "HandModel":
        """Fold the encoder's train-time branches for inference (same outputs, faster). Returns self."""
        self.encoder.reparameterize()
        return self
