"""The demo's pipeline: capture -> detect -> infer -> render, each stage in its own thread, joined by bounded queues.

Stages overlap, so the frame rate is set by the slowest stage, not by their sum: torch, OpenCV and the GL renderer
release the GIL while they work (a small model's Python between ops still waits for it when another stage runs Python,
so on two cores the rate falls somewhat short of the slowest stage's; see `handmesh bench --what demo`). Frames stay
in order. Files: every frame is processed (a full queue blocks the stage before it). A live camera: the capture keeps
only the newest frame, so stale frames are dropped, not queued.
When the detector needs the previous frame's outputs (the box tracker, and MediaPipe with detect-then-track,
`handmesh.demo.tracking`), detection runs inside the infer stage. For frames that arrive one at a time, the same
stages without threads: `handmesh.demo.frames.FrameProcessor`.
An error in any stage stops all of them and is raised again by `Pipeline.get` in the caller's thread.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from handmesh.demo.capture import Frame
from handmesh.demo.crop import HandEstimate, crop_hand, to_frame
from handmesh.demo.detect import Detection
from handmesh.demo.overlay import OverlayRenderer, ViewOptions
from handmesh.demo.smoothing import HandSmoother

_END = object()  # end of the stream, passed down the queues
_POLL_SECONDS = 0.05  # how often blocked stages look at the stop flag


@dataclass
class LiveSettings:
    """Switches the app flips from its keys while the stages read them."""

    view: ViewOptions = field(default_factory=ViewOptions)
    smoothing: bool = True


@dataclass
class Packet:
    """One frame on its way through the stages."""

    frame: Frame
    timings_ms: dict[str, float] = field(default_factory=dict)  # per stage
    started_s: dict[str, float] = field(default_factory=dict)  # per stage: perf_counter seconds when it began
    detections: list[Detection] = field(default_factory=list)
    hands: list[HandEstimate] = field(default_factory=list)
    image: np.ndarray | None = None  # (H, W + panel, 3) uint8 RGB, the frame with the hands drawn


class HandReconstructor:
    """Detections -> crops -> one batched `Predictor.predict` -> hands in the full frame, smoothed per track.

    `smooth_boxes` runs in the detect stage and `__call__` in the infer stage: each has its own smoother (threads).
    """

    def __init__(self, predictor, K_frame: np.ndarray, settings: LiveSettings):
        self.predictor = predictor
        self.K_frame = K_frame  # (3, 3) px
        self.settings = settings
        self.box_smoother = HandSmoother()
        self.hand_smoother = HandSmoother()

    def smooth_boxes(self, detections: list[Detection], time_s: float) -> list[Detection]:
        self.box_smoother.keep({d.track_id for d in detections})
        if not self.box_smoother.follow(self.settings.smoothing):
            return detections
        return [replace(d, box=self.box_smoother.box(d.track_id, d.box, time_s)) for d in detections]

    def __call__(self, frame: Frame, detections: list[Detection]) -> list[HandEstimate]:
        self.hand_smoother.keep({d.track_id for d in detections})
        if not detections:
            return []
        size = self.predictor.input_size
        crops = [crop_hand(frame.image, d.box, self.K_frame, size, d.is_left) for d in detections]
        prediction = self.predictor.predict(np.stack([c.image for c in crops]), np.stack([c.K for c in crops]))
        hands = [
            to_frame(crop, prediction.vertices[i], prediction.keypoints_3d[i], prediction.keypoints_2d[i],
                     self.predictor.faces, detection.track_id)
            for i, (crop, detection) in enumerate(zip(crops, detections))
        ]
        if self.hand_smoother.follow(self.settings.smoothing):
            hands = [self.hand_smoother.hand(hand, frame.time, self.K_frame) for hand in hands]
        return hands


class Pipeline:
    """Runs source -> [detect] -> infer -> render in threads; `get()` hands out finished packets in order."""

    def __init__(self, source, detector, reconstructor: HandReconstructor,
                 renderer_factory: Callable[[], OverlayRenderer], settings: LiveSettings,
                 max_frames: int | None = None, queue_size: int = 2):
        self.source, self.detector, self.reconstructor = source, detector, reconstructor
        self.renderer_factory, self.settings, self.max_frames = renderer_factory, settings, max_frames
        self.dropped = 0  # live frames skipped to stay current
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._live = bool(source.is_live)
        self._captured = queue.Queue(maxsize=1 if self._live else queue_size)
        self._detected = queue.Queue(maxsize=queue_size)
        self._inferred = queue.Queue(maxsize=queue_size)
        self._rendered = queue.Queue(maxsize=queue_size)
        separate_detect = not detector.uses_feedback
        self._threads = [
            threading.Thread(target=self._capture, name="demo-capture", daemon=True),
            threading.Thread(target=self._run_stage, name="demo-infer", daemon=True,
                             args=(self._detected if separate_detect else self._captured, self._inferred, self._infer)),
            threading.Thread(target=self._render_stage, name="demo-render", daemon=True),
        ]
        if separate_detect:
            self._threads.append(threading.Thread(target=self._run_stage, name="demo-detect", daemon=True,
                                                  args=(self._captured, self._detected, self._detect)))

    # -- stages (each runs in its own thread) --------------------------------------------------------------------
    def _capture(self) -> None:
        def produce():
            count = 0
            while not self._stop.is_set() and (self.max_frames is None or count < self.max_frames):
                start = time.perf_counter()
                frame = self.source.read()
                if frame is None:
                    return
                packet = Packet(frame, {"capture": (time.perf_counter() - start) * 1e3}, {"capture": start})
                if self._live:
                    self._put_latest(packet)
                else:
                    self._put(self._captured, packet)
                count += 1

        self._guard(produce, self._captured)

    def _detect(self, packet: Packet) -> Packet:
        start = packet.started_s["detect"] = time.perf_counter()
        detections = self.detector.detect(packet.frame.image)
        packet.detections = self.reconstructor.smooth_boxes(detections, packet.frame.time)
        packet.timings_ms["detect"] = (time.perf_counter() - start) * 1e3
        return packet

    def _infer(self, packet: Packet) -> Packet:
        if self.detector.uses_feedback:
            packet = self._detect(packet)
        start = packet.started_s["infer"] = time.perf_counter()
        packet.hands = self.reconstructor(packet.frame, packet.detections)
        self.detector.update(packet.hands)
        packet.timings_ms["infer"] = (time.perf_counter() - start) * 1e3
        return packet

    def _render_stage(self) -> None:
        renderer: OverlayRenderer | None = None

        def loop():
            nonlocal renderer
            renderer = self.renderer_factory()  # the GL context belongs to this thread

            def render(packet: Packet) -> Packet:
                start = packet.started_s["render"] = time.perf_counter()
                packet.image = renderer.draw(packet.frame.image, packet.hands, self.settings.view)
                packet.timings_ms["render"] = (time.perf_counter() - start) * 1e3
                return packet

            self._loop(self._inferred, self._rendered, render)

        try:
            self._guard(loop, self._rendered)
        finally:
            if renderer is not None:
                renderer.close()

    def _run_stage(self, inbox: queue.Queue, outbox: queue.Queue, step: Callable[[Packet], Packet]) -> None:
        self._guard(lambda: self._loop(inbox, outbox, step), outbox)

    # -- plumbing ------------------------------------------------------------------------------------------------
    def _loop(self, inbox: queue.Queue, outbox: queue.Queue, step: Callable[[Packet], Packet]) -> None:
        while True:
            item = self._get(inbox)
            if item is _END:
                return
            self._put(outbox, step(item))

    def _guard(self, body: Callable[[], None], outbox: queue.Queue) -> None:
        """Run a stage body; on error remember the first one and stop everything; always pass the end marker on."""
        try:
            body()
        except BaseException as error:  # noqa: BLE001 - re-raised in the caller's thread by get()
            if self._error is None:
                self._error = error
            self._stop.set()
        finally:
            self._put(outbox, _END, force=True)

    def _get(self, inbox: queue.Queue):
        while True:
            try:
                return inbox.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                if self._stop.is_set():
                    return _END

    def _put(self, outbox: queue.Queue, item, force: bool = False) -> None:
        """Blocking put that gives up when stopping (the end marker is then forced in, replacing what waits)."""
        while True:
            try:
                outbox.put(item, timeout=_POLL_SECONDS)
                return
            except queue.Full:
                if self._stop.is_set():
                    if not force:
                        return
                    self._drain(outbox)

    def _put_latest(self, packet: Packet) -> None:
        """Live capture: replace a frame nobody has taken yet (it is stale) with this one."""
        while True:
            try:
                self._captured.put_nowait(packet)
                return
            except queue.Full:
                if self._drain(self._captured):
                    self.dropped += 1

    @staticmethod
    def _drain(box: queue.Queue) -> bool:
        try:
            box.get_nowait()
            return True
        except queue.Empty:
            return False

    # -- the caller's side ---------------------------------------------------------------------------------------
    def start(self) -> "Pipeline":
        for thread in self._threads:
            thread.start()
        return self

    def get(self) -> Packet | None:
        """The next finished packet in order; None at the end of the stream. Raises a stage's error."""
        item = self._get_final()
        if item is _END:
            self.stop()
            if self._error is not None:
                raise self._error
            return None
        return item

    def _get_final(self):
        while True:
            try:
                return self._rendered.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                if self._stop.is_set() and not any(t.is_alive() for t in self._threads):
                    return _END

    def stop(self) -> None:
        """Stop every stage and wait for them (a second call does nothing)."""
        self._stop.set()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=10)
