"""Mesh rendering over images: pyrender offscreen (EGL, CPU-capable) and an OpenCV fallback.

Meshes are in the OpenCV/FreiHAND camera frame (x right, y down, z forward, metres) and are seen through pixel
intrinsics K. Nothing happens at import: pyrender (and the EGL platform choice it needs) is loaded on first use.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from dataclasses import dataclass

import cv2
import numpy as np

from handmesh.errors import HandmeshError

SKIN_RGB = (0.80, 0.62, 0.52)  # default mesh colour, linear RGB in [0, 1]
_OPENGL_FROM_OPENCV = np.diag([1.0, -1.0, -1.0])  # flips y and z: OpenCV camera frame -> OpenGL's


def _load_triton_first() -> None:
    """Mesa's llvmpipe and triton (imported by timm/torch) each carry LLVM; importing triton *after* a GL context has
    rendered segfaults, the other order is fine. So triton, when installed, is loaded before the first context."""
    if importlib.util.find_spec("triton") is not None:
        importlib.import_module("triton")


class RendererUnavailable(HandmeshError):
    """No OpenGL context could be made (no EGL/Mesa); use `render_mesh_opencv` instead."""


@dataclass
class Rendering:
    """One rendered view. Pixels not covered by the mesh have mask False and depth 0."""

    color: np.ndarray  # (H, W, 3) uint8 RGB
    depth: np.ndarray  # (H, W) float32 metres along z, 0 where empty
    mask: np.ndarray  # (H, W) bool, True on the mesh


class MeshRenderer:
    """Reusable offscreen renderer for one image size. Create once, call `render` per frame, `close` at the end.

    Keep one per process: closing one pyrender EGL renderer while another is alive breaks the other.
    """

    def __init__(self, width: int, height: int):
        os.environ.setdefault("PYOPENGL_PLATFORM", "egl")  # must precede the first pyrender import
        _load_triton_first()
        try:
            import pyrender
        except Exception as error:  # noqa: BLE001 - any import failure means no GL here
            raise RendererUnavailable(
                f"pyrender could not load ({type(error).__name__}: {error}); expected an EGL-capable OpenGL "
                "(Debian: apt-get install libegl1 libegl-mesa0 libgl1-mesa-dri). The OpenCV fallback still works."
            ) from None
        self._pyrender = pyrender
        self.width, self.height = width, height
        try:
            self._renderer = pyrender.OffscreenRenderer(width, height)
        except Exception as error:  # noqa: BLE001
            raise RendererUnavailable(
                f"no offscreen OpenGL context ({type(error).__name__}: {error}); expected EGL through Mesa "
                "(PYOPENGL_PLATFORM=egl; Debian: libegl1 libegl-mesa0 libgl1-mesa-dri). The OpenCV fallback still works."
            ) from None

    def render(
        self,
        meshes: list[tuple[np.ndarray, np.ndarray]],
        K: np.ndarray,
        color: tuple[float, float, float] = SKIN_RGB,
        light_intensity: float = 3.0,
        ambient: float = 0.35,
    ) -> Rendering:
        """meshes: [(vertices (N, 3) metres camera frame, faces (F, 3))]; K (3, 3) pixels."""
        pyrender = self._pyrender
        scene = pyrender.Scene(bg_color=[0, 0, 0, 0], ambient_light=[ambient] * 3)
        material = pyrender.MetallicRoughnessMaterial(
            metallicFactor=0.0, roughnessFactor=0.7, baseColorFactor=(*color, 1.0), doubleSided=True
        )
        for vertices, faces in meshes:
            import trimesh

            mesh = trimesh.Trimesh(np.asarray(vertices) @ _OPENGL_FROM_OPENCV.T, faces, process=False)
            scene.add(pyrender.Mesh.from_trimesh(mesh, material=material, smooth=True))
        # OpenGL puts pixel centres at +0.5 where OpenCV puts them at integers: shift the principal point to match.
        camera = pyrender.IntrinsicsCamera(fx=K[0, 0], fy=K[1, 1], cx=K[0, 2] + 0.5, cy=K[1, 2] + 0.5, znear=0.01, zfar=20.0)
        scene.add(camera, pose=np.eye(4))
        scene.add(pyrender.DirectionalLight(color=np.ones(3), intensity=light_intensity), pose=np.eye(4))
        rgba, depth = self._renderer.render(scene, flags=pyrender.RenderFlags.RGBA)
        return Rendering(color=np.ascontiguousarray(rgba[..., :3]), depth=depth.astype(np.float32), mask=depth > 0)

    def close(self) -> None:
        self._renderer.delete()


def overlay(image: np.ndarray, rendering: Rendering, alpha: float = 0.8) -> np.ndarray:
    """Blend a rendering over an (H, W, 3) uint8 image where the mesh is; returns a new image."""
    out = image.copy()
    mask = rendering.mask
    blended = alpha * rendering.color[mask].astype(np.float32) + (1 - alpha) * image[mask].astype(np.float32)
    out[mask] = np.clip(blended, 0, 255).astype(np.uint8)
    return out


def render_mesh_opencv(
    image: np.ndarray,
    vertices: np.ndarray,
    faces: np.ndarray,
    K: np.ndarray,
    color: tuple[float, float, float] = SKIN_RGB,
    alpha: float = 0.8,
) -> np.ndarray:
    """Painter's-algorithm fallback: filled triangles far to near, Lambert-shaded by a light at the camera.

    image (H, W, 3) uint8 RGB; vertices (N, 3) metres camera frame; K (3, 3). Returns a new image.
    """
    vertices = np.asarray(vertices, dtype=np.float64)
    triangles = vertices[faces]  # (F, 3, 3)
    in_front = (triangles[..., 2] > 1e-3).all(axis=1)
    triangles = triangles[in_front]
    if len(triangles) == 0:
        return image.copy()
    normals = np.cross(triangles[:, 1] - triangles[:, 0], triangles[:, 2] - triangles[:, 0])
    normals /= np.linalg.norm(normals, axis=1, keepdims=True) + 1e-12
    centres = triangles.mean(axis=1)
    view = -centres / (np.linalg.norm(centres, axis=1, keepdims=True) + 1e-12)
    shade = 0.35 + 0.65 * np.abs((normals * view).sum(axis=1))  # two-sided Lambert, (F,)
    uvw = triangles @ K.T
    pixels = uvw[..., :2] / uvw[..., 2:3]  # (F, 3, 2)
    layer = image.copy()
    base = np.array(color) * 255.0
    for index in np.argsort(-centres[:, 2]):  # far to near
        polygon = np.round(pixels[index] * 16).astype(np.int32)  # 4 bits of sub-pixel precision
        fill = tuple(float(c) for c in base * shade[index])
        cv2.fillConvexPoly(layer, polygon, fill, lineType=cv2.LINE_AA, shift=4)
    covered = np.any(layer != image, axis=-1)
    out = image.copy()
    out[covered] = np.clip(alpha * layer[covered] + (1 - alpha) * image[covered].astype(np.float32), 0, 255).astype(np.uint8)
    return out
