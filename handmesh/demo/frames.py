"""The demo's stages for one frame at a time, in the caller's thread: for frames that arrive one by one (a web app's
stream, a test) rather than from a `capture` source.

    processor = FrameProcessor(Predictor.from_checkpoint(...), width=640, height=480)
    result = processor.process(rgb)  # rgb (480, 640, 3) uint8
    result.image, result.hands, result.timings_ms
    processor.close()

The same parts as the threaded `Pipeline`: the detector (MediaPipe every `detect_every` frames, the hands followed from
the model's keypoints in between; or the box tracker), crops with left hands flipped, one batched `Predictor` call,
One Euro smoothing per track, and the overlay. Frames must come from one stream, in order, all of one size; call
`process` from one thread at a time (the GL renderer's context is made in the thread of the first call).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from handmesh.demo.capture import Frame
from handmesh.demo.crop import HandEstimate, frame_intrinsics
from handmesh.demo.detect import Detection, make_detector
from handmesh.demo.overlay import OverlayRenderer, ViewOptions
from handmesh.demo.pipeline import HandReconstructor, LiveSettings
from handmesh.demo.tracking import DEFAULT_DETECT_EVERY
from handmesh.errors import HandmeshError


@dataclass
class FrameResult:
    """One processed frame."""

    image: np.ndarray  # (H, W [+ side panel], 3) uint8 RGB: the frame with the hands drawn (the raw frame if none)
    hands: list[HandEstimate]  # meshes and keypoints in the frame's camera (metres; 2D in frame pixels)
    detections: list[Detection]  # the boxes cropped, with side and track id
    timings_ms: dict[str, float] = field(default_factory=dict)  # detect, infer, render


class FrameProcessor:
    """detect/track -> crops -> Predictor -> smoothing -> overlay, for one (H, W, 3) uint8 RGB frame per call."""

    def __init__(self, predictor, width: int, height: int, detector: str = "auto",
                 detect_every: int = DEFAULT_DETECT_EVERY, max_hands: int | None = None, hand: str = "auto",
                 intrinsics: tuple[float, float, float, float] | None = None, renderer: str = "auto",
                 settings: LiveSettings | None = None, side_view: bool = False, fps: float = 30.0):
        """predictor: a `handmesh.inference.Predictor`. detector: auto | mediapipe | tracker (`make_detector`). hand:
        auto (the detector's handedness) | right | left (every hand given that side).
        intrinsics: the camera's (fx, fy, cx, cy) px (None: f = max(W, H), centred). settings: view and smoothing,
        which the caller may change between frames. fps: the time step when `process` is given no time."""
        self.width, self.height = width, height
        self.K = frame_intrinsics(width, height, intrinsics)  # (3, 3) px
        self.settings = settings or LiveSettings(view=ViewOptions())
        self.detector = make_detector(detector, width, height, max_hands, hand=hand, video=True,
                                      detect_every=detect_every)
        self.reconstructor = HandReconstructor(predictor, self.K, self.settings)
        self._renderer_options = (renderer, side_view)
        self._renderer: OverlayRenderer | None = None
        self._fps = fps
        self._index = 0

    @property
    def renderer_backend(self) -> str:
        """gl or opencv once the first frame is drawn; none before."""
        return self._renderer.backend if self._renderer is not None else "none"

    def process(self, image: np.ndarray, time_s: float | None = None) -> FrameResult:
        """image (H, W, 3) uint8 RGB of this processor's size; time_s its time in seconds (None: index / fps)."""
        image = np.asarray(image)
        if image.shape != (self.height, self.width, 3) or image.dtype != np.uint8:
            raise HandmeshError(f"frame: expected ({self.height}, {self.width}, 3) uint8 RGB, got {image.shape} "
                                f"{image.dtype}; make one FrameProcessor per frame size")
        frame = Frame(self._index, self._index / self._fps if time_s is None else time_s, image)
        self._index += 1
        start = time.perf_counter()
        detections = self.reconstructor.smooth_boxes(self.detector.detect(image), frame.time)
        detected = time.perf_counter()
        hands = self.reconstructor(frame, detections)
        self.detector.update(hands)
        inferred = time.perf_counter()
        if self._renderer is None:
            self._renderer = OverlayRenderer(self.width, self.height, self.K, *self._renderer_options)
        overlay = self._renderer.draw(image, hands, self.settings.view)
        done = time.perf_counter()
        timings = {"detect": (detected - start) * 1e3, "infer": (inferred - detected) * 1e3,
                   "render": (done - inferred) * 1e3}
        return FrameResult(overlay, hands, detections, timings)

    def close(self) -> None:
        """Release the detector and the renderer (a second call does nothing)."""
        if self._index >= 0:
            self.detector.close()
            self._index = -1
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
