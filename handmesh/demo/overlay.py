"""Drawing reconstructed hands over a frame: the shaded mesh, the 2D skeleton, and a side panel of other views.

Meshes go through `handmesh.render.LayerRenderer` (lean OpenGL offscreen, EGL) with the frame's camera, rendered only
over the region they cover (the region's camera is the frame's with the principal point shifted, so the pixels are the
full-frame render's), and blended in place. When no GL context can be made the OpenCV fallback draws them. The GL
context belongs to the thread that made it: create, use and close an `OverlayRenderer` in one thread.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

from handmesh.demo.crop import HandEstimate
from handmesh.errors import HandmeshError
from handmesh.joints import BONES
from handmesh.render import LayerRenderer, RendererUnavailable, blend_layer, render_mesh_opencv

RENDERERS = ("auto", "gl", "opencv")
FINGER_COLOURS = ((230, 80, 80), (240, 200, 60), (80, 200, 90), (70, 170, 240), (190, 100, 230))  # RGB, thumb..pinky
PANEL_FILL = 0.4  # in the side panel the hand's radius spans this share of the view
REGION_MARGIN = 2  # px rendered around the projected meshes' bounding box
# Mesa llvmpipe's rasteriser threads (LP_NUM_THREADS) for the demo's renderer. 0: it draws in the render thread
# itself. A hand's region is small: a draw took the same CPU time (~4 ms at 640x480) with 0, 1 or 2 threads, and
# threads of its own would wake on cores the model's torch threads are using. Mesa reads this once, at the process's
# first GL context (later contexts keep its threads); an LP_NUM_THREADS already in the environment wins.
LLVMPIPE_THREADS = 0
MIN_DEPTH = 1e-3  # metres; vertices nearer than this (or behind the camera) do not set the rendered region


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


@contextmanager
def llvmpipe_threads(count: int):
    """LP_NUM_THREADS=count while a GL context is made (unless already set), restored afterwards."""
    previous = os.environ.get("LP_NUM_THREADS")
    os.environ.setdefault("LP_NUM_THREADS", str(count))
    try:
        yield
    finally:
        if previous is None:
            del os.environ["LP_NUM_THREADS"]


class OverlayRenderer:
    """Draws hands over frames of one size seen through K (3, 3) px. backend: auto | gl | opencv.

    With GL, meshes are rendered only over their projected bounding box (plus REGION_MARGIN): llvmpipe's cost grows
    with the pixels drawn, and a hand covers a small part of the frame. One GL renderer serves both the frame and the
    side panel (two EGL renderers in one process can break each other).
    """

    def __init__(self, width: int, height: int, K: np.ndarray, backend: str = "auto", side_view: bool = False,
                 notify: Callable[[str], None] = lambda message: print(message, file=sys.stderr)):
        if backend not in RENDERERS:
            raise HandmeshError(f"unknown renderer {backend!r}; expected one of {', '.join(RENDERERS)}")
        self.width, self.height, self.K = width, height, np.asarray(K, dtype=np.float64)
        self.panel = panel_width(height, side_view)
        self._renderer: LayerRenderer | None = None
        self.backend = "opencv"
        if backend != "opencv":
            try:
                with llvmpipe_threads(LLVMPIPE_THREADS):
                    self._renderer = LayerRenderer(width, height)  # the panel (H/2 square) fits too
                self.backend = "gl"
            except RendererUnavailable as error:
                if backend == "gl":
                    raise
                notify(f"renderer: OpenCV fallback (flat, slower) because {error}".splitlines()[0])

    @property
    def output_size(self) -> tuple[int, int]:
        """(width, height) of the images `draw` returns."""
        return self.width + self.panel, self.height

    def draw(self, frame: np.ndarray, hands: list[HandEstimate], view: ViewOptions) -> np.ndarray:
        """frame (H, W, 3) uint8 RGB -> (H, W + panel, 3) uint8 RGB with the hands drawn (the frame as is without)."""
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
        uv = uv[:, :2] / uv[:, 2:]  # (N, 2) px
        x0, y0 = np.maximum(np.floor(uv.min(axis=0)).astype(int) - REGION_MARGIN, 0)
        x1, y1 = np.minimum(np.ceil(uv.max(axis=0)).astype(int) + REGION_MARGIN + 1, (self.width, self.height))
        if x1 <= x0 or y1 <= y0:
            return frame.copy()  # the hands are outside the frame
        K = self.K.copy()
        K[:2, 2] -= (x0, y0)  # the region's camera: the frame's, shifted
        layer = self._renderer.render(meshes, K, size=(int(x1 - x0), int(y1 - y0)))
        image = frame.copy()
        blend_layer(image, layer, alpha, int(x0), int(y0))
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
        """meshes placed by rotate_for_panel (focal length = side), drawn over view (P, P, 3), which may be changed."""
        size = view.shape[0]
        K = np.array([[size, 0.0, (size - 1) / 2.0], [0.0, size, (size - 1) / 2.0], [0.0, 0.0, 1.0]])
        if self._renderer is None:
            for vertices, faces in meshes:
                view = render_mesh_opencv(view, vertices, faces, K, alpha=1.0)
            return view
        blend_layer(view, self._renderer.render(meshes, K, size=(size, size)), alpha=1.0)
        return view

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
