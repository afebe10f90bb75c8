"""Crops and augmentations that keep the image, K, 2D and 3D labels exactly consistent. Pure functions on numpy.

Geometry (one 3x3 affine `A` maps source pixels to crop pixels; OpenCV convention: pixel centres at integers):

* In-plane rotation by `angle` is a rotation of the *3D scene* about the camera's optical axis,
  `R_z = [[c, -s, 0], [s, c, 0], [0, 0, 1]]`, applied to keypoints, vertices and MANO's global orientation. A camera
  rotation about its centre moves every image point by the homography `H = K R_z K^-1`, whatever its depth; since
  `R_z` keeps z, `H` is affine (a rotation about the principal point, exact even when fx != fy). So warping the image
  by `H` shows exactly the rotated scene through the same K.
* To rotate about the image centre `c` instead of the principal point, `H` is followed by the translation
  `c - H c`; then zoom about `c`, shift (jitter), and resize to the crop: `A = T(c' + shift) S(zoom * S/W) T(-c)
  T(c - H c) H`, where c' is the crop centre.
* The crop's intrinsics are `K' = A K R_z^T`, so that `K' (R_z X) = A K X`: projecting the rotated 3D points
  through K' lands exactly where the warped image shows them. With `A = P H` (P: the translations and scaling),
  `K' = P K R_z K^-1 K R_z^T = P K`: again a pinhole K, computed that way without rounding noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Augmentation:
    """Training-time augmentation strengths; a zero turns one part off. Defaults live here only."""

    scale: float = 0.15  # zoom factor drawn from [1 - scale, 1 + scale] (log-uniform), about the image centre
    rotation_deg: float = 60.0  # in-plane rotation angle drawn from [-rotation_deg, rotation_deg]
    translate: float = 0.06  # shift of the crop drawn from [-translate, translate] x crop size, per axis
    # brightness, contrast and saturation factors in [1 - j, 1 + j]; hue shift up to 18 j degrees
    color_jitter: float = 0.3
    blur_prob: float = 0.15  # chance of a Gaussian blur with sigma in [0.4, 1.6] x crop size / 224
    occlusion_prob: float = 0.15  # chance of a random rectangle over part of the hand
    occlusion_size: float = 0.3  # its side, up to this fraction of the crop size


@dataclass(frozen=True)
class CropGeometry:
    """One crop: the pixel map, the crop's intrinsics and the rotation applied to 3D labels."""

    affine: np.ndarray  # (3, 3) source pixels -> crop pixels
    K: np.ndarray  # (3, 3) crop intrinsics, pixels
    rotation: np.ndarray  # (3, 3) R_z applied to 3D points in the camera frame
    size: int  # crop side S, pixels


def crop_geometry(
    K: np.ndarray,
    image_size: tuple[int, int],
    crop_size: int,
    zoom: float = 1.0,
    angle_rad: float = 0.0,
    shift_px: tuple[float, float] = (0.0, 0.0),
) -> CropGeometry:
    """Crop of the whole image (W, H) = `image_size` to `crop_size`, zoomed by `zoom`, rotated by `angle_rad` and
    shifted by `shift_px` (crop pixels). K (3, 3) source intrinsics, a pinhole `[[fx, k, cx], [0, fy, cy], [0, 0, 1]]`.

    The module docstring's products, multiplied out: with `L = K2 R2 K2^-1` (the 2x2 parts; H = [L | p - L p],
    p the principal point), centre c, factor f = zoom S / max(W, H) and t = c' + shift,
    `A = [f L | t - f L c]` and `K' = P K = [[f fx, f k, u], [0, f fy, v], [0, 0, 1]]`, (u, v) = t - f L (c - p).
    In scalars: every training item computes this, and numpy spends ~2 us on each small-matrix operation.
    """
    (fx, skew, px), (_, fy, py), _ = np.asarray(K, dtype=np.float64).tolist()
    width, height = image_size
    cos, sin = math.cos(angle_rad), math.sin(angle_rad)
    l00, l01 = cos + skew * sin / fx, -sin * (skew * skew + fx * fx) / (fx * fy)  # L = K2 R2 K2^-1
    l10, l11 = sin * fy / fx, cos - skew * sin / fx
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    factor = zoom * crop_size / max(width, height)
    tx, ty = (crop_size - 1) / 2.0 + shift_px[0], (crop_size - 1) / 2.0 + shift_px[1]
    affine = np.array([
        [factor * l00, factor * l01, tx - factor * (l00 * cx + l01 * cy)],
        [factor * l10, factor * l11, ty - factor * (l10 * cx + l11 * cy)],
        [0.0, 0.0, 1.0],
    ])
    crop_K = np.array([
        [factor * fx, factor * skew, tx - factor * (l00 * (cx - px) + l01 * (cy - py))],
        [0.0, factor * fy, ty - factor * (l10 * (cx - px) + l11 * (cy - py))],
        [0.0, 0.0, 1.0],
    ])
    rotation = np.array([[cos, -sin, 0.0], [sin, cos, 0.0], [0.0, 0.0, 1.0]])
    return CropGeometry(affine=affine, K=crop_K, rotation=rotation, size=crop_size)


NUM_DRAWS = 11  # uniforms in [0, 1) drawn per augmented item: enough for every choice below (`draw_augmentation`)


@dataclass(frozen=True)
class AugmentationDraws:
    """A batch's random augmentation choices: Python lists for the per-item calls, an array for the colour maps."""

    zoom: list[float]  # factor about the image centre
    angle_rad: list[float]  # in-plane rotation
    shift_px: list[tuple[float, float]]  # of the crop, crop pixels
    colour: np.ndarray | None  # (B, 3, 4) affine RGB maps (`colour_maps`); None when colour jitter is off
    blur_sigma: list[float]  # Gaussian blur sigma, crop pixels; 0.0 for no blur
    occluded: list[bool]  # whether an occluder is painted
    used: list[int]  # uniforms each item used: its occluder's draws come next in its stream


def draw_augmentation(uniforms: np.ndarray, augmentation: Augmentation, crop_size: int) -> AugmentationDraws:
    """(B, NUM_DRAWS) uniforms in [0, 1) (each item's row from its own random stream, so an item's augmentation
    does not depend on its batch) -> the batch's augmentation, in a few array operations: per-item numpy calls cost
    microseconds each, and every training item would make a dozen of them.

    Each row is used in order: zoom, angle, shift x, shift y; brightness, contrast, saturation, hue (only with colour
    jitter on); whether to blur, its sigma (only when blurring); whether to occlude."""
    a = augmentation

    def between(column: int, low: float, high: float) -> np.ndarray:  # (B,) uniform in [low, high)
        return low + (high - low) * uniforms[:, column]

    zoom = np.exp(between(0, math.log1p(-a.scale), math.log1p(a.scale)))
    angle = np.radians(between(1, -a.rotation_deg, a.rotation_deg))
    shift = np.stack([between(2, -a.translate, a.translate), between(3, -a.translate, a.translate)], axis=1) * crop_size
    colour = None
    if a.color_jitter > 0:
        jitter = (1 - a.color_jitter, 1 + a.color_jitter)
        colour = colour_maps(between(4, *jitter), between(5, *jitter), between(6, *jitter),
                             between(7, -18 * a.color_jitter, 18 * a.color_jitter))
    blur_column = 8 if a.color_jitter > 0 else 4
    blurred = uniforms[:, blur_column] < a.blur_prob
    sigma = np.where(blurred, between(blur_column + 1, 0.4, 1.6) * crop_size / 224.0, 0.0)
    occlude_column = blur_column + 1 + blurred  # (B,)
    return AugmentationDraws(zoom=zoom.tolist(), angle_rad=angle.tolist(),
                             shift_px=[tuple(row) for row in shift.tolist()], colour=colour, blur_sigma=sigma.tolist(),
                             occluded=(uniforms[np.arange(len(uniforms)), occlude_column] < a.occlusion_prob).tolist(),
                             used=(occlude_column + 1).tolist())


_IDENTITY_ROWS = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)  # the top two rows of a 3x3 identity, flattened


def warp_image(image: np.ndarray, geometry: CropGeometry, bgr: bool = False) -> np.ndarray:
    """(H, W, C) uint8 -> (S, S, C) uint8 through the crop's affine map (bilinear); outside the source is black.
    bgr: the source is OpenCV's BGR (as `cv2.imread` gives it) and the crop RGB (the swap rides on a conversion that
    happens anyway); the result is then always a new array.

    Three-channel images are warped as four channels and converted back: OpenCV's bilinear warp of 8-bit images has a
    vector path for 4 channels but not for 3 (224 px, OpenCV 5.0: ~0.27 ms instead of ~0.5 ms; each conversion ~7 us).
    """
    if image.shape[:2] == (geometry.size, geometry.size) and all(
        abs(value - identity) < 1e-9 for value, identity in zip(geometry.affine[:2].ravel().tolist(), _IDENTITY_ROWS)
    ):  # in scalars, stopping at the first difference: ~1 us instead of numpy's ~10 us
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if bgr else image
    four = image.ndim == 3 and image.shape[2] == 3
    if four:  # the order of the 3 channels is kept, or swapped for a BGR source
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGBA if bgr else cv2.COLOR_RGB2RGBA)
    warped = cv2.warpAffine(
        image, geometry.affine[:2], (geometry.size, geometry.size), flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
    )
    return cv2.cvtColor(warped, cv2.COLOR_RGBA2RGB) if four else warped


def to_chw(image: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """(S, S, C) uint8 -> (C, S, S) uint8, C-contiguous: the planes of an NCHW batch, written into `out` (e.g. one
    item of a batch) or a new array (`cv2.split` straight into the planes: ~15 us at 224 px, 5x numpy's strided
    transpose copy)."""
    if out is None:
        return np.stack(cv2.split(image))
    if out.shape != (image.shape[2], *image.shape[:2]) or out.dtype != image.dtype or not out.flags.c_contiguous:
        raise ValueError(f"out is {out.dtype} {out.shape}, expected C-contiguous {image.dtype} (C, H, W) for an image "
                         f"of shape {image.shape}")  # else OpenCV would quietly write into new arrays instead
    cv2.split(image, list(out))
    return out


def rotate_points(points: np.ndarray, rotation: CropGeometry | np.ndarray) -> np.ndarray:
    """(..., N, 3) camera-frame points -> the same points rotated by R_z (float32); `rotation` is one crop's geometry
    or (..., 3, 3) matrices (a batch's, stacked: one product for all its items)."""
    matrix = rotation.rotation if isinstance(rotation, CropGeometry) else np.asarray(rotation)
    return (np.asarray(points, dtype=np.float64) @ np.swapaxes(matrix, -1, -2)).astype(np.float32)


def rotate_global_orient(pose: np.ndarray, rotation: CropGeometry | np.ndarray) -> np.ndarray:
    """(..., 48) MANO axis-angle poses -> the same poses (float32) with their global orientation (first 3) turned by
    R_z (one crop's geometry, or (..., 3, 3) matrices: a batch's at once), a rotation about the camera axis by theta:
    as unit quaternions q' = q_z(theta) q. Result angles in [0, pi], as Rodrigues'."""
    matrix = rotation.rotation if isinstance(rotation, CropGeometry) else np.asarray(rotation)
    half_t = np.arctan2(matrix[..., 1, 0], matrix[..., 0, 0]) / 2.0
    cz, sz = np.cos(half_t), np.sin(half_t)
    pose = np.asarray(pose)
    x, y, z = np.moveaxis(pose[..., :3].astype(np.float64), -1, 0)
    angle = np.sqrt(x * x + y * y + z * z)
    w = np.cos(angle / 2.0)
    scale = np.where(angle > 1e-12, np.sin(angle / 2.0) / np.maximum(angle, 1e-12), 0.5)  # q = (cos a/2, sin a/2 axis)
    qx, qy, qz = x * scale, y * scale, z * scale
    w, qx, qy, qz = cz * w - sz * qz, cz * qx - sz * qy, cz * qy + sz * qx, cz * qz + sz * w  # q_z q, q_z = (cz,0,0,sz)
    sign = np.where(w < 0, -1.0, 1.0)  # -q is the same rotation, with angle <= pi
    sin_half = np.sqrt(qx * qx + qy * qy + qz * qz)
    factor = sign * np.where(sin_half > 1e-12, 2.0 * np.arctan2(sin_half, sign * w) / np.maximum(sin_half, 1e-12), 2.0)
    turned = pose.astype(np.float32)  # a copy
    turned[..., :3] = np.stack([qx * factor, qy * factor, qz * factor], axis=-1)
    return turned


def project(points: np.ndarray, K: np.ndarray) -> np.ndarray:
    """(..., N, 3) metres camera frame, K (..., 3, 3) -> (..., N, 2) pixels (float32)."""
    uvw = np.asarray(points, dtype=np.float64) @ np.swapaxes(np.asarray(K, dtype=np.float64), -1, -2)
    return (uvw[..., :2] / np.maximum(uvw[..., 2:3], 1e-9)).astype(np.float32)


def photometric(image: np.ndarray, draws: AugmentationDraws, slot: int, out: np.ndarray | None = None) -> np.ndarray:
    """(S, S, 3) uint8 RGB -> colour-jittered and blurred as item `slot` of `draws` says (the occluder, which needs
    the hand's keypoints, is `occlude`). out: where to write the result (may be `image` itself: in place, no
    allocation); default a new array (or `image` when nothing applies)."""
    result = image
    if draws.colour is not None:
        result = color_jitter(result, draws.colour[slot], out)
    if draws.blur_sigma[slot] > 0:
        result = gaussian_blur(result, draws.blur_sigma[slot], out)
    if out is not None and result is not out:
        np.copyto(out, result)
        return out
    return result


def gaussian_blur(image: np.ndarray, sigma: float, out: np.ndarray | None = None) -> np.ndarray:
    """(H, W, C) uint8 blurred with a Gaussian of `sigma` pixels (kernel radius 3 sigma, reflected borders), into
    `out` (may be `image`) or a new array.

    Two separable float passes: `cv2.GaussianBlur` on 8-bit images takes its bit-exact fixed-point path, 2-3x slower
    at these sizes; results differ from it by at most 2 grey levels (its fixed-point rounding).
    """
    kernel = cv2.getGaussianKernel(2 * max(1, round(3 * sigma)) + 1, sigma)
    return cv2.sepFilter2D(image, -1, kernel, kernel, dst=out, borderType=cv2.BORDER_REFLECT_101)


_LUMA = (0.299, 0.587, 0.114)  # RGB weights of grey


# The SVG/CSS `hueRotate` matrix, an RGB rotation about the grey axis that keeps luminance (rows sum to 1, so it keeps
# grey), as constant + cos(angle) x _HUE_COS + sin(angle) x _HUE_SIN
_HUE_CONSTANT = np.array([[0.213, 0.715, 0.072]] * 3)
_HUE_COS = np.array([[0.787, -0.715, -0.072], [-0.213, 0.285, -0.072], [-0.213, -0.715, 0.928]])
_HUE_SIN = np.array([[-0.213, -0.715, 0.928], [0.143, 0.140, -0.283], [-0.787, 0.715, 0.072]])


def colour_maps(brightness: np.ndarray, contrast: np.ndarray, saturation: np.ndarray, hue_deg: np.ndarray
                ) -> np.ndarray:
    """(B,) factors b, c, s and hue angles -> (B, 3, 4) affine RGB maps, each x -> H S (c b x + (1 - c) b m) with
    m the image's mean grey level, S = s I + (1 - s) 1 luma^T, H the hue rotation. (S and H keep grey, so the offset
    (1 - c) b m passes through them unchanged; and H S = s H + (1 - s) 1 luma^T.) The last column holds (1 - c) b:
    `color_jitter` multiplies it by m."""
    radians = np.radians(hue_deg)[:, None, None]
    hue = _HUE_CONSTANT + np.cos(radians) * _HUE_COS + np.sin(radians) * _HUE_SIN  # (B, 3, 3)
    gain = (contrast * brightness)[:, None, None]
    saturation = saturation[:, None, None]
    linear = saturation * gain * hue + (1 - saturation) * gain * np.asarray(_LUMA)  # (B, 3, 3)
    offset = np.broadcast_to(((1 - contrast) * brightness)[:, None, None], (len(linear), 3, 1))
    return np.concatenate([linear, offset], axis=2)


def color_jitter(image: np.ndarray, colour: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB through one of `colour_maps`' (3, 4) maps, into `out` (may be `image`) or a new array: a
    single `cv2.transform`, saturating uint8 (3 channels in and out is its fast fixed-point path)."""
    mean = sum(cv2.mean(image)[:3]) / 3.0
    return cv2.transform(image, colour * (1.0, 1.0, 1.0, mean), dst=out)


def occlude(image: np.ndarray, max_fraction: float, rng: np.random.Generator, keypoints_2d: np.ndarray,
            out: np.ndarray | None = None) -> np.ndarray:
    """Paints a rectangle (flat colour or noise), side up to `max_fraction` of the image, centred near a keypoint,
    onto `out` (may be `image`) or a copy."""
    size = image.shape[0]
    if out is None:
        out = image.copy()
    elif out is not image:
        np.copyto(out, image)
    width, height = (rng.uniform(0.3, 1.0, size=2) * max_fraction * size).astype(int) + 1
    centre = keypoints_2d[rng.integers(len(keypoints_2d))] + rng.normal(0, 0.05 * size, size=2)
    x0, y0 = int(centre[0] - width / 2), int(centre[1] - height / 2)
    x1, y1 = max(0, x0), max(0, y0)
    x2, y2 = min(size, x0 + width), min(size, y0 + height)
    if x2 <= x1 or y2 <= y1:
        return out
    if rng.random() < 0.5:
        out[y1:y2, x1:x2] = rng.integers(0, 256, size=3, dtype=np.uint8)
    else:
        out[y1:y2, x1:x2] = rng.integers(0, 256, size=(y2 - y1, x2 - x1, 3), dtype=np.uint8)
    return out
