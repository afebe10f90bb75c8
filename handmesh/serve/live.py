"""A browser's webcam stream through the demo's threaded `Pipeline`: frames pushed by requests, one frame behind.

The browser sends a frame, waits for the answer, then sends the next. Answering each frame with its own overlay
would leave the pipeline idle during every network round trip. Instead a request pushes its frame and answers with
the previous frame's overlay, which was processed while the browser and the network were busy: the rate is set by
the slower of the two, not their sum, at the cost of one frame of latency. The first request of a stream has no
overlay yet (None). A stream whose browser sends nothing for IDLE_SECONDS ends its pipeline; the next frame starts
a new one. `LiveSessions` keeps the page's streams by session, within the server's limits.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass

import numpy as np

from handmesh.demo.capture import DEFAULT_FPS, Frame
from handmesh.demo.crop import frame_intrinsics
from handmesh.demo.detect import make_detector
from handmesh.demo.hud import RateMeter
from handmesh.demo.pipeline import HandReconstructor, LiveSettings, Packet, Pipeline
from handmesh.errors import HandmeshError
from handmesh.serve.files import decode_image
from handmesh.serve.frames import Controls, GLWorker, draw_hud, fit_frame, log

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


@dataclass
class LiveAnswer:
    overlay: np.ndarray | None  # (H, W, 3) uint8 RGB with the HUD; None while the stream starts
    status: str  # the status line


class LiveBusy(HandmeshError):
    """Every live slot is taken: the browser should try again later."""


class LiveSessions:
    """The page's live streams by session id (the page makes one per Start), at most `limit` at once. A stream ends
    after IDLE_SECONDS without a frame, when its page stops it, or `max_seconds` after it started."""

    def __init__(self, predictor, gl: GLWorker, status_lines: list[str], limit: int, max_seconds: float,
                 max_pixels: int):
        self.predictor, self.gl, self.status_lines = predictor, gl, status_lines
        self.limit, self.max_seconds, self.max_pixels = limit, max_seconds, max_pixels
        self._streams: dict[str, tuple[LiveStream, float]] = {}  # session -> (stream, monotonic start)
        self._lock = threading.Lock()

    def frame(self, session: str, data: bytes, controls: Controls) -> LiveAnswer:
        """One encoded webcam frame (JPEG/PNG bytes) of `session` -> the previous frame's overlay and the status
        line. Raises LiveBusy when no slot is free, `HandmeshError` for a frame that is not an image or a stream
        past its time."""
        image = fit_frame(decode_image(data, self.max_pixels))
        height, width = image.shape[:2]
        with self._lock:
            for name in [name for name, (stream, _) in self._streams.items() if stream.source.ended.is_set()]:
                self._streams.pop(name)[0].close()
            stream, started = self._streams.get(session, (None, time.monotonic()))
            if stream is not None and not stream.fits(controls, width, height):
                stream.close()
                stream = None
            if stream is None:
                if session not in self._streams and len(self._streams) >= self.limit:
                    raise LiveBusy(f"the server is busy: {self.limit} live stream(s) already, the most --concurrency "
                                   "allows; expected a free slot: press Start again later, or start the server "
                                   "with a larger --concurrency")
                stream = LiveStream(self.predictor, self.gl, controls, width, height)
                self._streams[session] = (stream, started)
        if time.monotonic() - started > self.max_seconds:
            self.stop(session)
            raise HandmeshError(f"this live stream reached the server's limit of {self.max_seconds:g} s "
                                "(--live-seconds): press Start to stream again")
        stream.update(controls)
        packet = stream.submit(image)
        if packet is None:
            return LiveAnswer(None, "starting")
        overlay = draw_hud(packet, stream.detector, stream.settings.smoothing, stream.rates, self.status_lines)
        mesh = "mesh drawn" if stream.settings.view.mesh and packet.hands else "no mesh"
        status = f"frame {stream.answered}: {len(packet.hands)} hand(s), {mesh}; {stream.rates.summary()}"
        return LiveAnswer(overlay, status)

    def stop(self, session: str) -> None:
        with self._lock:
            stream, _ = self._streams.pop(session, (None, 0.0))
        if stream is not None:
            stream.close()

    def close(self) -> None:
        with self._lock:
            streams, self._streams = [stream for stream, _ in self._streams.values()], {}
        for stream in streams:
            stream.close()
