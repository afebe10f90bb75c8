"""The demo app: options, the window and its keys, the HUD, recording and saving, around the threaded pipeline.

`python demo/webcam.py ...` and `handmesh demo ...` run `main` / `run` here.
Keys (window): q quit, s save the shown frame and meshes, r start/stop recording, m mesh/skeleton, f smoothing.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

import cv2
import numpy as np

from handmesh.cli_values import ENGINES, parse_intrinsics
from handmesh.demo.capture import open_source
from handmesh.demo.crop import frame_intrinsics
from handmesh.demo.detect import DETECTORS, HANDS, BoxTracker, make_detector
from handmesh.demo.hud import RateMeter, draw_hud
from handmesh.demo.outputs import (
    IMAGE_OUT_SUFFIX,
    MESH_FORMATS,
    VIDEO_SUFFIXES,
    MeshSaver,
    VideoRecorder,
    check_outputs,
    save_snapshot,
    write_png,
)
from handmesh.demo.overlay import RENDERERS, OverlayRenderer, ViewOptions, panel_width
from handmesh.demo.pipeline import HandReconstructor, LiveSettings, Pipeline
from handmesh.demo.stats import DemoStats, model_summary, steady_rate, warmup_count, write_stats_json
from handmesh.demo.tracking import DEFAULT_DETECT_EVERY, DetectThenTrack
from handmesh.errors import HandmeshError
from handmesh.progress import progress_bar
from handmesh.threads import torch_threads

DEFAULT_CHECKPOINT = Path("runs/quickstart/model.ckpt")  # used when present and no --checkpoint is given
DEFAULT_SNAPSHOT_DIR = Path("runs/demo")  # where the s and r keys write
WINDOW = "handmesh demo"
VIEW_CYCLE = ((True, False), (False, True), (True, True))  # (mesh, skeleton) states the m key steps through


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", default="0", help="webcam index, video file, image folder or image (default: 0)")
    parser.add_argument("--checkpoint", default=None,
                        help="trained model: a .ckpt file, a hub folder, an https:// URL or hf://owner/repo[/file] "
                             f"(default: {DEFAULT_CHECKPOINT} when present, else an untrained model)")
    parser.add_argument("--engine", choices=ENGINES, default="auto",
                        help="how the model runs: auto = ONNX Runtime (exported once, cached) when it matches torch")
    parser.add_argument("--mano-dir", default=None, help="folder with MANO_RIGHT.pkl (default: see `handmesh standin`)")
    parser.add_argument("--detector", choices=DETECTORS, default="auto",
                        help="mediapipe hands, or a box tracked from the model's keypoints (auto: mediapipe if "
                             "it loads)")
    parser.add_argument("--detect-every", type=int, default=DEFAULT_DETECT_EVERY, metavar="N",
                        help="run mediapipe every N frames (or when a hand is lost) and follow the hands from the "
                             f"model's keypoints in between; 1: every frame (default: {DEFAULT_DETECT_EVERY})")
    parser.add_argument("--max-hands", type=int, default=None,
                        help="hands to find (default: 2 with mediapipe, 1 tracker)")
    parser.add_argument("--hand", choices=HANDS, default="auto",
                        help="side of every hand: auto = the detector's handedness (the box tracker: right); right "
                             "or left forces it, e.g. where mediapipe is unsure of the side (default: auto)")
    parser.add_argument("--intrinsics", default=None, metavar="FX,FY,CX,CY",
                        help="the camera's pixel intrinsics (default: f = max(W, H), centred principal point)")
    parser.add_argument("--skeleton", action="store_true", help="draw 2D keypoints and bones (key m cycles views)")
    parser.add_argument("--side-view", action="store_true", help="add a panel with the mesh seen from the side and top")
    parser.add_argument("--renderer", choices=RENDERERS, default="auto",
                        help="mesh drawing: OpenGL offscreen (EGL) or the OpenCV fallback (auto: gl if it works)")
    parser.add_argument("--alpha", type=float, default=ViewOptions.alpha, help="mesh opacity over the frame")
    parser.add_argument("--no-smoothing", action="store_true", help="no temporal (One Euro) smoothing (key f toggles)")
    parser.add_argument("--no-window", action="store_true", help="headless: no window (use with --out)")
    parser.add_argument("--no-hud", action="store_true", help="no text or boxes on the frames")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"write the overlay here: a video ({', '.join(VIDEO_SUFFIXES)}), or a {IMAGE_OUT_SUFFIX} "
                             "image when --source is one image")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing --out, --stats-json or --save-meshes keypoints.json (default: "
                             "refuse)")
    parser.add_argument("--save-meshes", type=Path, default=None, metavar="DIR",
                        help="write per-frame meshes and keypoints.json into DIR")
    parser.add_argument("--mesh-format", choices=MESH_FORMATS, default="obj", help="format of written meshes")
    parser.add_argument("--snapshot-dir", type=Path, default=DEFAULT_SNAPSHOT_DIR, help="where keys s and r write")
    parser.add_argument("--max-frames", type=int, default=None, help="stop after this many frames")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for the model (default: all cores on 2-core machines, else all but one)")
    parser.add_argument("--stats-json", type=Path, default=None, metavar="PATH",
                        help="write the run's statistics here (frames, steady_fps, per-stage ms, hands per frame)")


def default_threads() -> int:
    """Threads for the demo's model. It is the costliest stage by far: on up to 2 cores it gets them all (the other
    stages run in its gaps: its threads sleep rather than spin); with more, every core but one, left to rendering,
    capture and detection."""
    cores = os.cpu_count() or 2
    return cores if cores <= 2 else cores - 1




def load_predictor(checkpoint: str | Path | None, mano_dir: str | None, engine: str = "torch",
                   threads: int | None = None):
    """The checkpoint's Predictor; with no --checkpoint, the quickstart one when present, else an untrained model."""
    from handmesh.inference import Predictor  # torch and timm load here, not at import

    if checkpoint is None and DEFAULT_CHECKPOINT.is_file():
        checkpoint = DEFAULT_CHECKPOINT
    if checkpoint is None:
        print(f"no --checkpoint and no {DEFAULT_CHECKPOINT}: running an UNTRAINED model "
              "(train one with `make quickstart`)", file=sys.stderr)
        return Predictor.untrained(mano_dir=mano_dir, engine=engine, threads=threads)
    return Predictor.from_checkpoint(checkpoint, mano_dir=mano_dir, engine=engine, threads=threads)


def model_warnings(predictor) -> list[str]:
    lines = []
    if not predictor.is_trained:
        lines.append("UNTRAINED model (random weights): the mesh is not a reconstruction")
    if predictor.is_standin:
        lines.append("STAND-IN hand model, not MANO: results are illustrative")
    return lines


def open_window(width: int, height: int) -> None:
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise HandmeshError("no display to open a window on (DISPLAY is not set); "
                            "run headless: --no-window --out out.mp4")
    try:
        cv2.namedWindow(WINDOW, cv2.WINDOW_NORMAL)  # resizable; starts at the frame's size
        cv2.resizeWindow(WINDOW, width, height)
    except cv2.error as error:
        raise HandmeshError(
            f"could not open a window ({str(error).strip().splitlines()[-1]}); run headless: --no-window --out out.mp4"
        ) from None


@contextmanager
def sigterm_as_interrupt():
    """Let `kill` stop the demo like Ctrl-C, so recordings are finalised."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class DemoApp:
    """One run: owns the source, detector, pipeline, window and outputs; `loop()` processes until the end or q."""

    def __init__(self, args: argparse.Namespace, source, predictor, stack: ExitStack,
                 intrinsics: tuple[float, float, float, float] | None):
        self.args, self.source, self.predictor = args, source, predictor
        self.K = frame_intrinsics(source.width, source.height, intrinsics)
        self.detector = make_detector(args.detector, source.width, source.height, args.max_hands,
                                      hand=args.hand, video=source.is_video,
                                      detect_every=args.detect_every if source.is_video else 1)  # photos: each alone
        stack.callback(self.detector.close)
        self.settings = LiveSettings(view=ViewOptions(mesh=True, skeleton=args.skeleton, alpha=args.alpha),
                                     smoothing=not args.no_smoothing)
        # (width, height) px of the shown and recorded frames
        self.output_size = (source.width + panel_width(source.height, args.side_view), source.height)
        self.rates = RateMeter()
        self.status_lines = [predictor.description.split(";")[0], *model_warnings(predictor)]
        self.recorder: VideoRecorder | None = None
        self.image_out: Path | None = None  # a single image's overlay goes here (a PNG)
        if args.out is not None and source.single_image:
            self.image_out = args.out
        elif args.out is not None:
            self.recorder = VideoRecorder(args.out, source.fps, self.output_size)
        stack.callback(self._stop_recording)  # also finalises a recording started with the r key
        self.saver: MeshSaver | None = None
        if args.save_meshes is not None:
            self.saver = MeshSaver(args.save_meshes, args.mesh_format, self.K, source.description)
            stack.callback(self._close_saver)
        self.frames = 0
        self.output_times: list[float] = []  # perf_counter seconds at which each frame came out
        self.started_s: list[dict[str, float]] = []  # each frame's per-stage start times, perf_counter seconds
        self.timings_ms: list[dict[str, float]] = []  # each frame's per-stage durations
        self.start_time = time.perf_counter()
        self.dropped = 0
        self.renderer_backend = "none"
        self.hands_per_frame: list[int] = []

    def _renderer(self) -> OverlayRenderer:
        """Called in the render thread, which owns the GL context."""
        renderer = OverlayRenderer(self.source.width, self.source.height, self.K, self.args.renderer,
                                   self.args.side_view)
        self.renderer_backend = renderer.backend
        return renderer

    def loop(self, stack: ExitStack) -> None:
        reconstructor = HandReconstructor(self.predictor, self.K, self.settings)
        pipeline = Pipeline(self.source, self.detector, reconstructor, self._renderer, self.settings,
                            max_frames=self.args.max_frames).start()
        stack.callback(pipeline.stop)
        total = self.source.frame_count
        if self.args.max_frames is not None:
            total = min(total or self.args.max_frames, self.args.max_frames)
        progress = progress_bar(total=total, unit="frame", disable=not self.args.no_window)
        stack.callback(progress.close)
        self.start_time = time.perf_counter()
        while (packet := pipeline.get()) is not None:
            now = time.perf_counter()
            self.output_times.append(now)
            self.started_s.append(packet.started_s)
            self.timings_ms.append(packet.timings_ms)
            self.rates.add_stages(packet.timings_ms)
            self.rates.tick(now)
            image = packet.image if self.args.no_hud else self._hud(packet)
            if self.recorder is not None:
                self.recorder.write(image)
            if self.image_out is not None:
                print(f"wrote {write_png(self.image_out, image)}", file=sys.stderr)
            if self.saver is not None:
                self.saver.add(packet.frame.index, packet.frame.time, packet.hands)
            self.frames += 1
            self.hands_per_frame.append(len(packet.hands))
            progress.update(1)
            if not self.args.no_window and not self._show(image, packet):
                break
        progress.close()
        self.dropped = pipeline.dropped

    def stats(self) -> DemoStats:
        times = self.output_times
        tracking = isinstance(self.detector, DetectThenTrack)
        fps, stage_ms = steady_rate(times, self.started_s, self.timings_ms)
        return DemoStats(
            frames=self.frames, seconds=times[-1] - self.start_time if times else 0.0, steady_fps=fps,
            stage_ms=stage_ms, dropped=self.dropped, detector=self.detector.name,
            renderer=self.renderer_backend, engine=self.predictor.engine, model=model_summary(self.predictor),
            detect_every=self.detector.every if tracking else 1,
            detector_frames=len(self.detector.detected_frames) if tracking else None,
            hands_per_frame=self.hands_per_frame, warmup_frames=warmup_count(self.frames),
        )

    def _hud(self, packet) -> np.ndarray:
        tracker = isinstance(self.detector, BoxTracker)
        start_box = self.detector.start_box if tracker and not packet.hands else None
        state = [self.detector.name, self.predictor.engine, "smoothing on" if self.settings.smoothing else
                 "smoothing off"]
        if self.recorder is not None:
            state.append(f"REC {self.recorder.frames}")
        if not packet.hands:
            state.append("no hand in view")
        return draw_hud(packet.image, packet.detections, self.rates, state, self.status_lines, start_box=start_box,
                        key_help=not self.args.no_window)

    def _show(self, image: np.ndarray, packet) -> bool:
        """Shows the frame and handles keys; False to quit."""
        cv2.imshow(WINDOW, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        key = cv2.waitKey(1) & 0xFF
        if key in (ord("q"), 27) or cv2.getWindowProperty(WINDOW, cv2.WND_PROP_VISIBLE) < 1:
            return False
        if key == ord("s"):
            paths = save_snapshot(self.args.snapshot_dir, image, packet.hands, self.args.mesh_format)
            print(f"saved {', '.join(str(p) for p in paths)}", file=sys.stderr)
        elif key == ord("r"):
            self._toggle_recording()
        elif key == ord("m"):
            view = self.settings.view
            index = VIEW_CYCLE.index((view.mesh, view.skeleton)) if (view.mesh, view.skeleton) in VIEW_CYCLE else -1
            view.mesh, view.skeleton = VIEW_CYCLE[(index + 1) % len(VIEW_CYCLE)]
        elif key == ord("f"):
            self.settings.smoothing = not self.settings.smoothing
        return True

    def _toggle_recording(self) -> None:
        if self.recorder is not None:
            self._stop_recording()
            return
        self.args.snapshot_dir.mkdir(parents=True, exist_ok=True)
        path = self.args.snapshot_dir / time.strftime("recording_%Y%m%d-%H%M%S.mp4")
        self.recorder = VideoRecorder(path, self.source.fps, self.output_size)
        print(f"recording to {path} (r stops)", file=sys.stderr)

    def _stop_recording(self) -> None:
        if self.recorder is not None:
            path = self.recorder.close()
            if path is not None:
                print(f"wrote {path} ({self.recorder.frames} frames)", file=sys.stderr)
            self.recorder = None

    def _close_saver(self) -> None:
        if self.saver is not None:
            path = self.saver.close()
            print(f"wrote {self.saver.meshes} meshes and {path}", file=sys.stderr)


def run_demo(args: argparse.Namespace, predictor=None) -> DemoStats:
    """One demo run with parsed `add_arguments` options; everything it opened is closed and finalised on return.

    predictor: an already loaded `Predictor` (then --checkpoint is not read), e.g. for benchmarks.
    """
    if args.no_window and args.out is None and args.save_meshes is None:
        raise HandmeshError("--no-window with no output: expected --out out.mp4 and/or --save-meshes DIR")
    for name, value in (("--threads", args.threads), ("--max-hands", args.max_hands), ("--max-frames", args.max_frames),
                        ("--detect-every", args.detect_every)):
        if value is not None and value < 1:
            raise HandmeshError(f"{name} {value}: expected a count of at least 1")
    if not 0.0 <= args.alpha <= 1.0:
        raise HandmeshError(f"--alpha {args.alpha}: expected an opacity between 0 and 1")
    intrinsics = parse_intrinsics(args.intrinsics)
    args.out, args.stats_json = check_outputs(args.source, args.out, args.stats_json, args.save_meshes, args.overwrite)
    threads = args.threads or default_threads()
    with ExitStack() as stack, sigterm_as_interrupt(), torch_threads(threads):
        source = open_source(args.source)
        stack.callback(source.close)
        print(f"source: {source.description}, {source.width}x{source.height}", file=sys.stderr)
        if not args.no_window:
            open_window(source.width + panel_width(source.height, args.side_view), source.height)
            stack.callback(cv2.destroyAllWindows)
        if predictor is None:
            predictor = load_predictor(args.checkpoint, args.mano_dir, args.engine, threads)
        print(f"model: {predictor.description}\nengine: {predictor.engine_note}", file=sys.stderr)
        app = DemoApp(args, source, predictor, stack, intrinsics)
        every = f", detecting every {args.detect_every} frames" if isinstance(app.detector, DetectThenTrack) else ""
        print(f"detector: {app.detector.name}{every}", file=sys.stderr)
        app.loop(stack)
        stats = app.stats()
        print(stats.summary(), file=sys.stderr)
        if args.stats_json is not None:
            write_stats_json(stats, args.stats_json)
            print(f"wrote {args.stats_json}", file=sys.stderr)
    return stats


def run(args: argparse.Namespace) -> int:
    from handmesh.standin import ensure_standin

    ensure_standin(args.mano_dir, command="handmesh demo")  # without MANO, the demo writes the stand-in and says so
    run_demo(args)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python demo/webcam.py`: the same as `handmesh demo`."""
    parser = argparse.ArgumentParser(prog="demo/webcam.py", description="handmesh live demo: 3D hand meshes on video")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except HandmeshError as error:
        print(f"handmesh demo: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("handmesh demo: interrupted", file=sys.stderr)
        return 130
