"""Square hand crops out of a full frame, with the crop's intrinsics, and the way back to the full frame.

Conventions: pixel centres sit at integer coordinates (OpenCV's); the camera frame is OpenCV's (x right, y down,
z forward, metres) and is the same for the full frame and every crop: a crop only changes the intrinsics.

Left hands: the model reconstructs right hands. A left hand's crop is flipped horizontally, which is the image of the
mirrored world (x -> -x), where the hand is a right hand. With A the (3, 3) affine full-frame px -> flipped-crop px and
M = diag(-1, 1, 1), the mirrored world is seen through K_model = A @ K_full @ M, a proper camera (fx > 0) whose
principal point is cx_crop -> (S - 1) - cx_crop. The model's outputs are mapped back with x -> -x in 3D and A^-1 in 2D.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

MIRROR = np.diag([-1.0, 1.0, 1.0])  # (3, 3) x -> -x, the mirror of the camera frame
DEFAULT_FOCAL_SCALE = 1.0  # focal length of a frame without --intrinsics: f = max(W, H) * this, pixels
# crop side / largest side of the 21 keypoints' bounding box: the mesh (about 1.1x the keypoints' extent) then spans
# ~55% of the crop, the middle of the training framing (handmesh.data.synth.FILL_RANGE, 40-70%, like FreiHAND)
DEFAULT_BOX_SCALE = 2.0


@dataclass(frozen=True)
class Box:
    """A square region of the full frame: centre and side, pixels."""

    cx: float
    cy: float
    size: float

    @classmethod
    def around(cls, points: np.ndarray, scale: float = DEFAULT_BOX_SCALE) -> "Box":
        """The square of side scale * (largest extent) centred on the bounding box of points (N, 2) px."""
        low, high = points.min(axis=0), points.max(axis=0)
        centre = (low + high) / 2.0
        return cls(float(centre[0]), float(centre[1]), float(max(high - low) * scale))

    def as_array(self) -> np.ndarray:
        """(3,) (cx, cy, size) px."""
        return np.array([self.cx, self.cy, self.size], dtype=np.float64)

    def corners(self) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) rounded px, for drawing."""
        half = self.size / 2.0
        return (round(self.cx - half), round(self.cy - half), round(self.cx + half), round(self.cy + half))


@dataclass
class HandCrop:
    """One hand's model input and how it relates to the full frame."""

    image: np.ndarray  # (S, S, 3) uint8 RGB; flipped horizontally for a left hand
    K: np.ndarray  # (3, 3) px, intrinsics to give the right-hand model (K_model above)
    affine: np.ndarray  # (3, 3) full-frame px -> crop px (the flip included)
    box: Box
    is_left: bool


@dataclass
class HandEstimate:
    """One reconstructed hand in the full frame's camera."""

    vertices: np.ndarray  # (778, 3) metres, camera frame
    faces: np.ndarray  # (1538, 3) vertex ids, outward winding for this hand's side
    keypoints_3d: np.ndarray  # (21, 3) metres, camera frame, FreiHAND order
    keypoints_2d: np.ndarray  # (21, 2) px in the full frame
    box: Box  # the crop it came from
    is_left: bool
    track_id: int = 0

    @property
    def side(self) -> str:
        return "left" if self.is_left else "right"


def frame_intrinsics(
    width: int, height: int, intrinsics: tuple[float, float, float, float] | None = None,
    focal_scale: float = DEFAULT_FOCAL_SCALE,
) -> np.ndarray:
    """(3, 3) px camera of a full frame: (fx, fy, cx, cy) when given, else f = max(W, H) * focal_scale and the
    principal point at the image centre ((W - 1) / 2, (H - 1) / 2) with pixel centres at integers."""
    if intrinsics is None:
        focal = max(width, height) * focal_scale
        intrinsics = (focal, focal, (width - 1) / 2.0, (height - 1) / 2.0)
    fx, fy, cx, cy = intrinsics
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=np.float64)


def crop_affine(box: Box, size: int, flip: bool) -> np.ndarray:
    """(3, 3) full-frame px -> crop px: the box's corner to 0, scaled to `size`; then u -> (S - 1) - u if flip."""
    scale = size / box.size
    x0, y0 = box.cx - box.size / 2.0, box.cy - box.size / 2.0
    affine = np.array([[scale, 0.0, -scale * x0], [0.0, scale, -scale * y0], [0.0, 0.0, 1.0]])
    if flip:
        affine = np.array([[-1.0, 0.0, size - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]) @ affine
    return affine


def crop_hand(frame: np.ndarray, box: Box, K_frame: np.ndarray, size: int, is_left: bool) -> HandCrop:
    """Cut the (size, size) crop of `box` out of frame (H, W, 3) uint8 RGB; black outside the frame."""
    affine = crop_affine(box, size, flip=is_left)
    image = cv2.warpAffine(frame, affine[:2], (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    K = affine @ K_frame @ MIRROR if is_left else affine @ K_frame
    return HandCrop(image=image, K=K, affine=affine, box=box, is_left=is_left)


def to_frame(
    crop: HandCrop, vertices: np.ndarray, keypoints_3d: np.ndarray, keypoints_2d: np.ndarray, faces: np.ndarray,
    track_id: int = 0,
) -> HandEstimate:
    """The model's outputs for one crop -> the hand in the full frame.

    vertices (778, 3) and keypoints_3d (21, 3) metres in the model's camera frame (mirrored for a left hand),
    keypoints_2d (21, 2) px in the crop, faces (1538, 3) the right hand's triangles.
    """
    points = np.concatenate([keypoints_2d, np.ones((len(keypoints_2d), 1))], axis=1) @ np.linalg.inv(crop.affine).T
    if crop.is_left:
        vertices, keypoints_3d, faces = vertices @ MIRROR, keypoints_3d @ MIRROR, faces[:, ::-1]
    return HandEstimate(
        vertices=np.ascontiguousarray(vertices, dtype=np.float32),
        faces=np.ascontiguousarray(faces),
        keypoints_3d=np.ascontiguousarray(keypoints_3d, dtype=np.float32),
        keypoints_2d=points[:, :2].astype(np.float32),
        box=crop.box,
        is_left=crop.is_left,
        track_id=track_id,
    )
