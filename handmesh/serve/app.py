"""The page: Live (webcam streamed both ways), Image (overlay, 3D view, downloads; the `predict_image` API) and Video.

Every handler turns bad input (`HandmeshError`) into a message in the page (`gr.Error`) without a traceback, and
removes what it wrote for a request that failed. Results live in the server's temporary folder (`serve` removes it).
"""

from __future__ import annotations

import functools
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from handmesh.demo.capture import VideoSource
from handmesh.demo.crop import frame_intrinsics
from handmesh.demo.detect import DETECTORS, make_detector, mediapipe_available
from handmesh.demo.hud import RateMeter
from handmesh.demo.outputs import MeshSaver, VideoRecorder
from handmesh.demo.pipeline import HandReconstructor, LiveSettings, Pipeline
from handmesh.errors import HandmeshError
from handmesh.serve.files import (
    UploadError,
    check_video,
    decode_image,
    mano_parameters,
    payload_path,
    write_keypoints_json,
    write_meshes,
    write_png,
    zip_folder,
)
from handmesh.serve.frames import MAX_SIDE, VIEWS, Controls, FrameSession, GLWorker, draw_hud, fit_frame, log
from handmesh.serve.live_page import live_html

RESULT_MAX_AGE = 3600.0  # s; older request folders are removed when a new request comes


@dataclass
class ServeConfig:
    """The server's settings; defaults are the safe ones (local only, no share link)."""

    host: str = "127.0.0.1"
    port: int = 7860
    share: bool = False
    detector: str = "auto"  # the detector the page's controls start with
    max_upload_mb: float = 50.0
    max_image_mp: float = 40.0  # megapixels, read from the header before decoding
    max_video_seconds: float = 60.0
    live_seconds: int = 600  # one live stream's processing time before the browser has to start it again
    concurrency: int = 2  # requests of each kind processed at once (live, image); videos one at a time
    queue_size: int = 32  # requests waiting beyond that are refused


class Server:
    """The handlers, around one predictor and one GL worker. Results go to `workdir`/results/<request>/."""

    def __init__(self, config: ServeConfig, predictor, gl: GLWorker, workdir: Path, status_lines: list[str]):
        self.config, self.predictor, self.gl = config, predictor, gl
        self.results = workdir / "results"
        self.results.mkdir(parents=True, exist_ok=True)
        self.status_lines = status_lines  # the model's description, then warnings (untrained, stand-in)

    def _request_dir(self) -> Path:
        now = time.time()
        for old in self.results.iterdir():
            if now - old.stat().st_mtime > RESULT_MAX_AGE:
                shutil.rmtree(old, ignore_errors=True)
        return Path(tempfile.mkdtemp(dir=self.results))

    # -- Image ------------------------------------------------------------------------------------------------
    def predict_image(self, image, detector: str = "auto", view: str = "mesh", max_hands: int = 2):
        """One image -> overlay PNG, the hands' .glb, downloads (.glb, .obj, .ply, .json), keypoint JSON, summary."""
        try:
            frame = decode_image(image, int(self.config.max_image_mp * 1e6))
        except UploadError:
            _remove_upload(image)  # a refused upload is not kept (a good one stays, to run again with other controls)
            raise
        original = frame.shape[1], frame.shape[0]
        frame = fit_frame(frame)
        controls = Controls(detector=detector, smoothing=False, view=view, max_hands=max_hands)
        session = FrameSession(self.predictor, self.gl, controls, frame.shape[1], frame.shape[0], video=False)
        try:
            packet = session.process(frame, 0.0, passes=session.still_passes())
            overlay = draw_hud(packet, session.detector, False, session.rates, self.status_lines)
        finally:
            session.close()
        directory = self._request_dir()
        try:
            png = write_png(directory / "overlay.png", overlay)
            meshes = write_meshes(directory, packet.hands) if packet.hands else []
            mano = mano_parameters(self.predictor, frame, packet.hands, session.K)
            keypoints = write_keypoints_json(directory / "hands.json", packet.hands, session.K,
                                             (frame.shape[1], frame.shape[0]), self.predictor.description, mano)
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise
        scaled = f" (scaled from {original[0]}x{original[1]})" if original != (frame.shape[1], frame.shape[0]) else ""
        summary = (f"{len(packet.hands)} hand(s) found by {session.detector.name} in {frame.shape[1]}x"
                   f"{frame.shape[0]}{scaled}, drawn: {view}; "
                   + ", ".join(f"{k} {v:.0f} ms" for k, v in packet.timings_ms.items()))
        glb = str(meshes[0]) if meshes else None
        return str(png), glb, [str(p) for p in meshes] + [str(keypoints)], str(keypoints), summary

    # -- Video ------------------------------------------------------------------------------------------------
    def video(self, video, detector: str, smoothing: bool, view: str, max_hands: int, progress=None):
        """A clip -> (overlay .webm, zip of per-frame .obj meshes and keypoints.json, summary)."""
        path = payload_path(video)
        if path is None:
            raise UploadError("no video: upload a clip (mp4, webm, avi, mkv), then press Run")
        try:
            count, fps = check_video(path, self.config.max_video_seconds, MAX_SIDE)
        except UploadError:
            _remove_upload(video)
            raise
        return self._video(path, _original_name(video, path), count, fps, detector, smoothing, view, max_hands,
                           progress)

    def _video(self, path: Path, name: str, count, fps, detector, smoothing, view, max_hands, progress):
        controls = Controls(detector=detector, smoothing=smoothing, view=view, max_hands=max_hands)
        directory = self._request_dir()
        source = VideoSource(path, notify=log)
        source.description = f"video {name}"
        K = frame_intrinsics(source.width, source.height)
        hand_finder = make_detector(controls.detector, source.width, source.height, controls.detector_hands(),
                                    video=True, notify=log)
        settings = LiveSettings(view=controls.view_options(), smoothing=smoothing)
        reconstructor = HandReconstructor(self.predictor, K, settings)
        limit = int(self.config.max_video_seconds * fps)  # when the container does not say its length
        pipeline = Pipeline(source, hand_finder, reconstructor, lambda: self.gl.renderer(K), settings, max_frames=limit)
        recorder = VideoRecorder(directory / "overlay.webm", fps, (source.width, source.height))
        saver = MeshSaver(directory / "meshes", "obj", K, source.description)
        rates = RateMeter()
        try:
            pipeline.start()
            while (packet := pipeline.get()) is not None:
                rates.add_stages(packet.timings_ms)
                rates.tick(time.perf_counter())
                recorder.write(draw_hud(packet, hand_finder, smoothing, rates, self.status_lines))
                saver.add(packet.frame.index, packet.frame.time, packet.hands)
                if progress is not None:
                    progress((recorder.frames, count or limit), desc="frames", unit="frames")
            saver.close()
            recorder.close()
            if recorder.frames == 0:
                raise UploadError(f"{name!r}: no frame could be decoded; expected a complete video file")
            archive = zip_folder(directory / "meshes", directory / "meshes.zip")
            shutil.rmtree(directory / "meshes")
        except BaseException:
            recorder.close()
            shutil.rmtree(directory, ignore_errors=True)
            raise
        finally:
            pipeline.stop()
            source.close()
            hand_finder.close()
        summary = (f"{recorder.frames} frames, {saver.meshes} meshes; detector {hand_finder.name}; mean ms: "
                   + ", ".join(f"{k} {v:.0f}" for k, v in rates.mean_ms().items()))
        return str(recorder.path), str(archive), summary


def _original_name(payload, path: Path) -> str:
    if isinstance(payload, dict) and isinstance(payload.get("video"), dict):
        payload = payload["video"]
    name = payload.get("orig_name") if isinstance(payload, dict) else None
    return str(name or path.name)


def _remove_upload(payload) -> None:
    """Remove an uploaded file (it lies in Gradio's upload folder, inside the temporary folder)."""
    path = payload_path(payload)
    if path is not None:
        path.unlink(missing_ok=True)


def page_errors(function):
    """HandmeshError -> gr.Error (a message in the page, no traceback in the log); other errors as they are."""
    import gradio as gr

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except HandmeshError as error:
            log(f"refused: {error}")
            raise gr.Error(str(error), print_exception=False) from None

    return wrapper


def build_app(server: Server):
    """The gr.Blocks page around `server`'s handlers."""
    import gradio as gr

    def controls(tab: str, smoothing: bool = True):
        with gr.Row():
            detector = gr.Dropdown(list(DETECTORS), value=server.config.detector, label="detector",
                                   info="auto: mediapipe if installed, else the box tracker (one hand)")
            view = gr.Radio(list(VIEWS), value="mesh", label="draw", elem_id=f"{tab}-view")
            hands = gr.Slider(1, 4, value=2, step=1, label="max hands", info="mediapipe only")
            items = [detector]
            if smoothing:
                items.append(gr.Checkbox(value=True, label="smoothing (One Euro)"))
        return items + [view, hands]

    description, _, hand_model = server.predictor.description.partition("; ")
    provenance = "  \n".join([f"**Model:** {description}"] + [f"⚠️ **{line}**" for line in server.status_lines[1:]])
    if hand_model:
        provenance += f"\n<details><summary>hand model</summary>{hand_model}</details>\n"
    unmirrored = gr.WebcamOptions(mirror=False)  # the model sees the camera's image, as in the CLI demo
    detector_note = "mediapipe" if mediapipe_available() else "the box tracker (mediapipe is not installed)"
    with gr.Blocks(title="handmesh", delete_cache=(600, int(RESULT_MAX_AGE))) as page:
        gr.Markdown(f"# handmesh: 3D hand meshes from one RGB image\n{provenance}  \nDetector `auto` uses "
                    f"{detector_note}. Camera: f = max(W, H) px, centred; 3D outputs are metres in that camera.")
        with gr.Tab("Live"):
            gr.HTML(live_html(server.config.detector))  # its client (launch's js) and routes: live_page.py
            gr.Markdown("The overlay lags the camera by one frame (frames are processed while the next travels). "
                        "No picture? Allow camera access for this page; browsers give it only to https or "
                        "localhost pages.")
        with gr.Tab("Image"):
            with gr.Row():
                image_in = gr.Image(sources=["upload", "webcam", "clipboard"], type="filepath", label="image",
                                    elem_id="image-input", webcam_options=unmirrored)
                image_out = gr.Image(label="overlay", type="filepath", interactive=False)
            image_controls = controls("image", smoothing=False)
            image_run = gr.Button("Run", variant="primary", elem_id="image-run")
            with gr.Row():
                model3d = gr.Model3D(label="3D mesh (glTF axes: y up)", clear_color=(0.1, 0.1, 0.1, 1.0))
                downloads = gr.File(label="downloads: meshes (camera frame, metres) and JSON", file_count="multiple")
            keypoints = gr.File(label="keypoints and MANO parameters (JSON)")
            image_summary = gr.Textbox(label="summary", interactive=False, elem_id="image-summary")
            image_run.click(page_errors(server.predict_image), [image_in, *image_controls],
                            [image_out, model3d, downloads, keypoints, image_summary], api_name="predict_image",
                            preprocess=False, concurrency_limit=server.config.concurrency, concurrency_id="image")
        with gr.Tab("Video"):
            with gr.Row():
                video_in = gr.Video(label=f"clip (at most {server.config.max_video_seconds:g} s)", format=None,
                                    sources=["upload"])
                video_out = gr.Video(label="overlay", format=None, interactive=False)
            video_controls = controls("video")
            video_run = gr.Button("Run", variant="primary")
            meshes_zip = gr.File(label="per-frame meshes (.obj) and keypoints.json (zip)")
            video_summary = gr.Textbox(label="summary", interactive=False)

            def run_video(video, detector, smoothing, view, max_hands,
                          progress=gr.Progress()):  # noqa: B008 - Gradio's idiom: it passes the page's tracker
                return server.video(video, detector, smoothing, view, max_hands, progress)

            video_run.click(page_errors(run_video), [video_in, *video_controls], [video_out, meshes_zip, video_summary],
                            api_name="predict_video", preprocess=False, concurrency_limit=1, concurrency_id="video")
    page.queue(default_concurrency_limit=server.config.concurrency, max_size=server.config.queue_size)
    return page
