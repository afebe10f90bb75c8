"""Drawing reconstructed hands over a frame: the shaded mesh, the 2D skeleton, and a side panel of other views.

Meshes go through `handmesh.render.MeshRenderer` (pyrender offscreen, EGL) at the frame size with the frame's camera,
so they land on the hands; when no GL context can be made the OpenCV fallback draws them. The GL context belongs to
the thread that made it: create, use and close an `OverlayRenderer` in one thread.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

from handmesh.demo.crop import Box, HandEstimate, crop_affine
from handmesh.errors import HandmeshError
from handmesh.joints import BONES
from handmesh.render import MeshRenderer, RendererUnavailable, render_mesh_opencv

RENDERERS = ("auto", "pyrender", "opencv")
FINGER_COLOURS = ((230, 80, 80), (240, 200, 60), (80, 200, 90), (70, 170, 240), (190, 100, 230))  # RGB, thumb..pinky
PANEL_FILL = 0.4  # in the side panel the hand's radius spans this share of the view
RENDER_SIZE_FRACTION = 0.3  # side of the square GL window the meshes are rendered into, as a share of min(W, H) ...
RENDER_SIZE_LIMITS = (128, 512)  # ... within these px: llvmpipe's cost grows with the pixels the hand covers
WINDOW_MARGIN = 4.0  # px around the projected meshes in that window
MIN_DEPTH = 1e-3  # metres; vertices nearer than this (or behind the camera) are not drawn


@dataclass
class ViewOptions:
    """What to draw; toggled live by keys (m) in the app."""

    mesh: bool = True
    skeleton: bool = False
    alpha: float = 0.7  # mesh opacity over the frame


def panel_width(height: int, side_view: bool) -> int:
    """Width (px) of the side panel added right of the frame: two square views of half the frame height, stacked."""
    return height // 2 if side_view else 0


def rotate_for_panel(hands: list[HandEstimate], view: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """Meshes turned to be seen from the right ("side") or from above ("top"), centred at a depth where they fill
    PANEL_FILL of a square view whose focal length equals its side. Returns [(vertices (778, 3) m, faces)]."""
    points = np.concatenate([h.vertices for h in hands]).astype(np.float64)  # (N, 3) metres
    centre = points.mean(axis=0)
    radius = max(float(np.linalg.norm(points - centre, axis=1).max()), 1e-3)
    if view == "side":  # about the y axis: depth becomes x, so the camera looks from the right
        rotation = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])
    else:  # about the x axis: depth becomes y (down), so the camera looks from above
        rotation = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    offset = np.array([0.0, 0.0, radius / PANEL_FILL])
    return [((h.vertices - centre) @ rotation.T + offset, h.faces) for h in hands]


def draw_skeleton(image: np.ndarray, keypoints_2d: np.ndarray) -> None:
    """Bones and joints of one hand, in place. keypoints_2d (21, 2) px, FreiHAND order."""
    thickness = max(1, round(min(image.shape[:2]) / 240))
    points = [tuple(int(round(c)) for c in p) for p in np.nan_to_num(keypoints_2d)]
    for parent, child in BONES:
        finger = (child - 1) // 4
        cv2.line(image, points[parent], points[child], FINGER_COLOURS[finger], thickness + 1, cv2.LINE_AA)
    for index, point in enumerate(points):
        colour = (255, 255, 255) if index == 0 else FINGER_COLOURS[(index - 1) // 4]
        cv2.circle(image, point, thickness + 2, colour, -1, cv2.LINE_AA)


class OverlayRenderer:
    """Draws hands over frames of one size seen through K (3, 3) px. backend: auto | pyrender | opencv.

    With pyrender, meshes are rendered into a square window of `render_size` px around the hands (the window's
    intrinsics are a crop's, `crop_affine @ K`) and warped back into the frame: the same picture as a full-frame
    render (a little softer when the hands span more than `render_size`), at a fraction of the cost: on llvmpipe a
    render costs ~15 ms plus ~0.4 us per pixel (pyrender's PBR shader, 4x MSAA). One GL renderer serves both the
    frame and the side panel (pyrender cannot keep two EGL renderers alive in one process reliably).
    """

    def __init__(self, width: int, height: int, K: np.ndarray, backend: str = "auto", side_view: bool = False,
                 render_size: int | None = None,
                 notify: Callable[[str], None] = lambda message: print(message, file=sys.stderr)):
        if backend not in RENDERERS:
            raise HandmeshError(f"unknown renderer {backend!r}; expected one of {', '.join(RENDERERS)}")
        self.width, self.height, self.K = width, height, np.asarray(K, dtype=np.float64)
        self.panel = panel_width(height, side_view)
        low, high = RENDER_SIZE_LIMITS
        self.render_size = render_size or int(np.clip(round(RENDER_SIZE_FRACTION * min(width, height)), low, high))
        self._renderer: MeshRenderer | None = None
        self.backend = "opencv"
        if backend != "opencv":
            try:
                self._renderer = MeshRenderer(self.render_size, self.render_size)
                self.backend = "pyrender"
            except RendererUnavailable as error:
                if backend == "pyrender":
                    raise
                notify(f"renderer: OpenCV fallback (flat, slower) because {error}".splitlines()[0])

    @property
    def output_size(self) -> tuple[int, int]:
        """(width, height) of the images `draw` returns."""
        return self.width + self.panel, self.height

    def draw(self, frame: np.ndarray, hands: list[HandEstimate], view: ViewOptions) -> np.ndarray:
        """frame (H, W, 3) uint8 RGB -> (H, W + panel, 3) uint8 RGB with the hands drawn; the frame as is without hands."""
        meshes = [(h.vertices, h.faces) for h in hands]
        if meshes and view.mesh:
            image = self._frame_meshes(frame, meshes, view.alpha)
        else:
            image = frame.copy()
        if view.skeleton:
            for hand in hands:
                draw_skeleton(image, hand.keypoints_2d)
        if self.panel:
            image = np.concatenate([image, self._side_panel(hands)], axis=1)
        return image

    def _frame_meshes(self, frame: np.ndarray, meshes, alpha: float) -> np.ndarray:
        """meshes: a non-empty list of (vertices (778, 3) metres, faces); returns a new image."""
        if self._renderer is None:
            image = frame
            for vertices, faces in meshes:
                image = render_mesh_opencv(image, vertices, faces, self.K, alpha=alpha)
            return image
        points = np.concatenate([v for v, _ in meshes]).astype(np.float64)  # (N, 3) metres
        points = points[points[:, 2] > MIN_DEPTH]
        if len(points) == 0:
            return frame.copy()
        uv = points @ self.K.T
        uv = uv[:, :2] / uv[:, 2:]
        low = np.maximum(uv.min(axis=0) - WINDOW_MARGIN, 0)
        high = np.minimum(uv.max(axis=0) + WINDOW_MARGIN, (self.width - 1, self.height - 1))
        if np.any(high <= low):
            return frame.copy()  # the hands are outside the frame
        window = Box(*((low + high) / 2), float(max(high - low)))
        affine = crop_affine(window, self.render_size, flip=False)  # frame px -> window px
        rendering = self._renderer.render(meshes, affine @ self.K)
        x0, y0 = int(low[0]), int(low[1])
        x1, y1 = int(np.ceil(high[0])) + 1, int(np.ceil(high[1])) + 1
        to_window = (affine @ np.array([[1.0, 0, x0], [0, 1.0, y0], [0, 0, 1]]))[:2]  # region px -> window px
        flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
        colour = cv2.warpAffine(rendering.color, to_window, (x1 - x0, y1 - y0), flags=flags).astype(np.float32)
        cover = cv2.warpAffine(rendering.mask.astype(np.float32), to_window, (x1 - x0, y1 - y0), flags=flags)
        weight = (alpha * cover)[..., None]  # (h, w, 1) soft-edged opacity
        image = frame.copy()
        region = image[y0:y1, x0:x1]
        region[:] = np.clip(weight * colour + (1 - weight) * region, 0, 255).astype(np.uint8)
        return image

    def _side_panel(self, hands: list[HandEstimate]) -> np.ndarray:
        size = self.panel
        views = []
        for name in ("side", "top"):
            view = np.full((size, size, 3), 32, dtype=np.uint8)
            if hands:
                view = self._panel_view(view, rotate_for_panel(hands, name))
            cv2.putText(view, name, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (200, 200, 200), 1, cv2.LINE_AA)
            views.append(view)
        panel = np.concatenate(views, axis=0)
        return np.pad(panel, ((0, self.height - panel.shape[0]), (0, 0), (0, 0)))

    def _panel_view(self, view: np.ndarray, meshes) -> np.ndarray:
        """meshes placed by rotate_for_panel (focal length = side), drawn over view (P, P, 3); returns a new image."""
        if self._renderer is None:
            size = view.shape[0]
            K = np.array([[size, 0.0, (size - 1) / 2.0], [0.0, size, (size - 1) / 2.0], [0.0, 0.0, 1.0]])
            for vertices, faces in meshes:
                view = render_mesh_opencv(view, vertices, faces, K, alpha=1.0)
            return view
        size = self.render_size
        K = np.array([[size, 0.0, (size - 1) / 2.0], [0.0, size, (size - 1) / 2.0], [0.0, 0.0, 1.0]])
        rendering = self._renderer.render(meshes, K)
        shape = (view.shape[1], view.shape[0])
        colour = cv2.resize(rendering.color, shape, interpolation=cv2.INTER_AREA).astype(np.float32)
        cover = cv2.resize(rendering.mask.astype(np.float32), shape, interpolation=cv2.INTER_AREA)[..., None]
        return np.clip(cover * colour + (1 - cover) * view, 0, 255).astype(np.uint8)

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
