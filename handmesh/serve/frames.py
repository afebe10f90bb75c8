"""One frame through the demo's stages (`handmesh.demo`), and the one thread that draws with GL.

A `FrameSession` runs the demo's stage objects for one image in the caller's thread: the detector, the
`HandReconstructor` (crops, `Predictor`, flip back, smoothing) and the `OverlayRenderer`, in the order and with the
timings of `handmesh.demo.pipeline.Pipeline`; on a still image the box tracker may repeat detect -> infer to move its
box onto the hand. Streams and videos go through the `Pipeline` itself (live.py, app.py), drawing with
`GLWorker.renderer`.

GL: a process keeps one GL renderer, owned by one thread (closing one ends the EGL display). `GLWorker` is that
thread; every request hands it frames to draw. Its renderer is made once for frames up to MAX_SIDE px a side and
pointed at each frame's size and camera before drawing.
"""

from __future__ import annotations

import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np

from handmesh.demo.capture import Frame
from handmesh.demo.crop import HandEstimate, frame_intrinsics
from handmesh.demo.detect import BoxTracker, make_detector, mediapipe_available
from handmesh.demo.hud import RateMeter, draw_hud as demo_hud
from handmesh.demo.overlay import OverlayRenderer, ViewOptions
from handmesh.demo.pipeline import HandReconstructor, LiveSettings, Packet

MAX_SIDE = 1920  # px; larger frames are scaled down to this before processing
VIEWS = {"mesh": (True, False), "skeleton": (False, True), "mesh + skeleton": (True, True)}  # name -> (mesh, skeleton)
STILL_PASSES = 3  # the box tracker on a still image: detect -> infer -> move the box, this many times


def log(message: str) -> None:
    print(f"handmesh serve: {message}", file=sys.stderr)


@dataclass(frozen=True)
class Controls:
    """What the page's controls choose, per request."""

    detector: str = "auto"  # handmesh.demo.detect.DETECTORS
    smoothing: bool = True
    view: str = "mesh"  # a key of VIEWS
    max_hands: int = 2  # mediapipe; the box tracker follows one hand

    def view_options(self) -> ViewOptions:
        mesh, skeleton = VIEWS.get(self.view, VIEWS["mesh"])
        return ViewOptions(mesh=mesh, skeleton=skeleton)

    def detector_hands(self) -> int | None:
        """max_hands for `make_detector`: None (its default, one hand) when it will be the box tracker."""
        tracker = self.detector == "tracker" or (self.detector == "auto" and not mediapipe_available())
        return None if tracker else max(1, int(self.max_hands))


def fit_frame(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB, scaled down (aspect kept) when a side exceeds MAX_SIDE."""
    scale = MAX_SIDE / max(image.shape[:2])
    if scale >= 1:
        return np.ascontiguousarray(image)
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


class _RetargetedOverlay(OverlayRenderer):
    """The demo's OverlayRenderer, made once at MAX_SIDE square and pointed at each frame's size and camera."""

    def retarget(self, width: int, height: int, K: np.ndarray) -> None:
        self.width, self.height, self.K = width, height, np.asarray(K, dtype=np.float64)


class GLWorker:
    """The thread that owns the process's one GL renderer; `draw` may be called from any thread."""

    def __init__(self, backend: str = "auto"):
        self.backend = backend
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="serve-gl")
        self._overlay: _RetargetedOverlay | None = None

    def _draw(self, frame: np.ndarray, hands: list[HandEstimate], K: np.ndarray, view: ViewOptions) -> np.ndarray:
        if self._overlay is None:
            self._overlay = _RetargetedOverlay(MAX_SIDE, MAX_SIDE, K, self.backend, notify=log)
            log(f"renderer: {self._overlay.backend}")
        self._overlay.retarget(frame.shape[1], frame.shape[0], K)
        return self._overlay.draw(frame, hands, view)

    def draw(self, frame: np.ndarray, hands: list[HandEstimate], K: np.ndarray, view: ViewOptions) -> np.ndarray:
        """frame (H, W, 3) uint8 RGB, H and W <= MAX_SIDE, seen through K (3, 3) px -> the frame with hands drawn."""
        return self._executor.submit(self._draw, frame, hands, K, view).result()

    def renderer(self, K: np.ndarray) -> "WorkerRenderer":
        """An `OverlayRenderer` stand-in for the demo's `Pipeline` (its render thread calls draw and close)."""
        return WorkerRenderer(self, K)

    def close(self) -> None:
        def close_overlay():
            if self._overlay is not None:
                self._overlay.close()

        self._executor.submit(close_overlay).result()
        self._executor.shutdown()


class WorkerRenderer:
    """Draws through the GLWorker with one frame camera; closing it leaves the worker's renderer open."""

    def __init__(self, worker: GLWorker, K: np.ndarray):
        self.worker, self.K = worker, K

    def draw(self, frame: np.ndarray, hands: list[HandEstimate], view: ViewOptions) -> np.ndarray:
        return self.worker.draw(frame, hands, self.K, view)

    def close(self) -> None:
        """The worker's renderer stays open for the next user."""


class FrameSession:
    """Frames of one size through one detector and its smoothers, in order, in the caller's thread (`process`)."""

    def __init__(self, predictor, gl: GLWorker, controls: Controls, width: int, height: int, video: bool):
        self.predictor, self.gl, self.controls = predictor, gl, controls
        self.size = (width, height)
        self.K = frame_intrinsics(width, height)  # (3, 3) px
        self.detector = make_detector(controls.detector, width, height, controls.detector_hands(),
                                      video=video, notify=log)
        self.settings = LiveSettings(view=controls.view_options(), smoothing=controls.smoothing)
        self.reconstructor = HandReconstructor(predictor, self.K, self.settings)
        self.rates = RateMeter()
        self.frames = 0
        self.lock = threading.Lock()  # one frame at a time: the detector and smoothers keep state

    def process(self, image: np.ndarray, time_s: float, passes: int = 1) -> Packet:
        """image (H, W, 3) uint8 RGB of this session's size -> the packet, its image drawn (no HUD).

        The stages of `handmesh.demo.pipeline.Pipeline` in order, timed the same way. passes > 1 repeats detect and
        infer on the same image (the box tracker then moves its box onto the hand).
        """
        with self.lock:
            packet = Packet(Frame(self.frames, time_s, image))
            for _ in range(passes):
                start = time.perf_counter()
                detections = self.detector.detect(image)
                packet.detections = self.reconstructor.smooth_boxes(detections, time_s)
                packet.timings_ms["detect"] = (time.perf_counter() - start) * 1e3
                start = time.perf_counter()
                packet.hands = self.reconstructor(packet.frame, packet.detections)
                self.detector.update(packet.hands)
                packet.timings_ms["infer"] = (time.perf_counter() - start) * 1e3
            start = time.perf_counter()
            packet.image = self.gl.draw(image, packet.hands, self.K, self.settings.view)
            packet.timings_ms["render"] = (time.perf_counter() - start) * 1e3
            self.rates.add_stages(packet.timings_ms)
            self.rates.tick(time.perf_counter())
            self.frames += 1
            return packet

    def still_passes(self) -> int:
        return STILL_PASSES if isinstance(self.detector, BoxTracker) else 1

    def close(self) -> None:
        self.detector.close()


def draw_hud(packet: Packet, detector, smoothing: bool, rates: RateMeter, status_lines: list[str]) -> np.ndarray:
    """The packet's image with the CLI demo's HUD (`handmesh.demo.hud.draw_hud`): boxes, rates, state, provenance."""
    state = [detector.name, "smoothing on" if smoothing else "smoothing off"]
    state.append(f"{len(packet.hands)} hand(s)" if packet.hands else "no hand in view")
    tracker = isinstance(detector, BoxTracker)
    start_box = detector.start_box if tracker and not packet.hands else None
    return demo_hud(packet.image, packet.detections, rates, state, status_lines, start_box=start_box)
