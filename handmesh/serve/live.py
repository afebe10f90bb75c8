"""A browser's webcam stream through the demo's threaded `Pipeline`: frames pushed by requests, one frame behind.

The browser sends a frame, waits for the answer, then sends the next. Answering each frame with its own overlay
would leave the pipeline idle during every network round trip. Instead a request pushes its frame and answers with
the previous frame's overlay, which was processed while the browser and the network were busy: the rate is set by
the slower of the two, not their sum, at the cost of one frame of latency. The first request of a stream has no
overlay yet (None). A stream whose browser sends nothing for IDLE_SECONDS ends its pipeline; the next frame starts
a new one.
"""

from __future__ import annotations

import queue
import threading
import time

import numpy as np

from handmesh.demo.capture import DEFAULT_FPS, Frame
from handmesh.demo.crop import frame_intrinsics
from handmesh.demo.detect import make_detector
from handmesh.demo.hud import RateMeter
from handmesh.demo.pipeline import HandReconstructor, LiveSettings, Packet, Pipeline
from handmesh.serve.frames import Controls, GLWorker, log

IDLE_SECONDS = 5.0  # no frame from the browser for this long: the stream is over
POLL_SECONDS = 0.05


class PushSource:
    """The Pipeline's source for frames that requests push in: a live camera (only the newest frame is kept)."""

    is_live = True
    is_video = True
    frame_count = None
    fps = DEFAULT_FPS

    def __init__(self, width: int, height: int):
        self.width, self.height = width, height
        self.description = "browser webcam"
        self.ended = threading.Event()  # set once read() has given up (idle) or close() was called
        self._frames: queue.Queue[Frame] = queue.Queue(maxsize=1)
        self._index = 0
        self.dropped = 0  # frames replaced before the pipeline took them

    def push(self, image: np.ndarray, time_s: float) -> None:
        """image (H, W, 3) uint8 RGB of the source's size; replaces a frame not yet taken."""
        frame = Frame(self._index, time_s, image)
        self._index += 1
        while True:
            try:
                self._frames.put_nowait(frame)
                return
            except queue.Full:
                try:
                    self._frames.get_nowait()
                    self.dropped += 1
                except queue.Empty:
                    pass

    def read(self) -> Frame | None:
        deadline = time.monotonic() + IDLE_SECONDS
        while not self.ended.is_set() and time.monotonic() < deadline:
            try:
                return self._frames.get(timeout=POLL_SECONDS)
            except queue.Empty:
                continue
        self.ended.set()
        return None

    def close(self) -> None:
        self.ended.set()


class LiveStream:
    """One browser stream: its detector, smoothers and Pipeline; `submit` a frame, get the previous one's packet."""

    def __init__(self, predictor, gl: GLWorker, controls: Controls, width: int, height: int):
        self.controls, self.size = controls, (width, height)
        K = frame_intrinsics(width, height)  # (3, 3) px
        self.detector = make_detector(controls.detector, width, height, controls.detector_hands(),
                                      video=True, notify=log)
        self.settings = LiveSettings(view=controls.view_options(), smoothing=controls.smoothing)
        self.source = PushSource(width, height)
        self.pipeline = Pipeline(self.source, self.detector, HandReconstructor(predictor, K, self.settings),
                                 lambda: gl.renderer(K), self.settings).start()
        self.rates = RateMeter()
        self.pushed = 0
        self.answered = 0  # packets handed back
        self._lock = threading.Lock()

    def fits(self, controls: Controls, width: int, height: int) -> bool:
        """Whether frames of this size with these controls can go on here (smoothing and view change in place)."""
        before = (self.controls.detector, self.controls.detector_hands())
        same = (controls.detector, controls.detector_hands()) == before and (width, height) == self.size
        return same and not self.source.ended.is_set()

    def update(self, controls: Controls) -> None:
        self.controls = controls
        self.settings.view = controls.view_options()
        self.settings.smoothing = controls.smoothing

    def submit(self, image: np.ndarray) -> Packet | None:
        """Push image (H, W, 3) uint8 RGB; the oldest packet still owed (usually the previous frame's), or None when
        this frame is the only one in the pipeline."""
        with self._lock:
            self.source.push(image, time.monotonic())
            self.pushed += 1
            if self.pushed - self.answered - self.pipeline.dropped - self.source.dropped < 2:
                return None
            packet = self.pipeline.get()
            if packet is None:
                return None
            self.answered += 1
            packet.timings_ms.pop("capture", None)  # the wait for the browser's next frame, not work
            self.rates.add_stages(packet.timings_ms)
            self.rates.tick(time.perf_counter())
            return packet

    def close(self) -> None:
        self.source.close()
        self.pipeline.stop()
        self.detector.close()
