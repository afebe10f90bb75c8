"""`handmesh serve`: the demo in a browser (Gradio): live webcam, images (API `predict_image`) and videos.

Safe by default: it listens on 127.0.0.1 only and makes no public link; reach a remote server through an SSH tunnel
(`ssh -L 7860:localhost:7860 server`). Everything it writes lives in one temporary folder, removed on exit.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from handmesh.cli_values import ENGINES
from handmesh.errors import HandmeshError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from handmesh.demo.detect import DETECTORS
    from handmesh.serve.app import ServeConfig  # numpy and the demo's light modules only

    defaults = ServeConfig()
    parser.add_argument("--host", default=defaults.host,
                        help="address to listen on (default: 127.0.0.1, this machine only; use an SSH tunnel "
                             "rather than 0.0.0.0 on a network you do not control)")
    parser.add_argument("--port", type=int, default=defaults.port,
                        help="port (default: %(default)s; 0: the first free one from 7860)")
    parser.add_argument("--share", action="store_true", help="also make a public gradio.live link (off by default)")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="trained model (default: runs/quickstart/model.ckpt when present, else untrained)")
    parser.add_argument("--mano-dir", default=None,
                        help="folder with MANO_RIGHT.pkl (default: see `handmesh standin`)")
    parser.add_argument("--detector", choices=DETECTORS, default=defaults.detector,
                        help="the page's first detector: mediapipe, the box tracker, or auto (mediapipe if installed)")
    parser.add_argument("--engine", choices=ENGINES, default="torch", help="inference engine (default: torch)")
    parser.add_argument("--renderer", choices=("auto", "gl", "opencv"), default="auto",
                        help="mesh drawing: OpenGL offscreen (EGL) or the OpenCV fallback (auto: gl if it works)")
    parser.add_argument("--max-upload-mb", type=float, default=defaults.max_upload_mb, help="largest upload, MiB")
    parser.add_argument("--max-image-mp", type=float, default=defaults.max_image_mp, help="largest image, megapixels")
    parser.add_argument("--max-video-seconds", type=float, default=defaults.max_video_seconds,
                        help="longest video accepted, seconds")
    parser.add_argument("--live-seconds", type=int, default=defaults.live_seconds,
                        help="one live stream's limit, seconds (then press Start again)")
    parser.add_argument("--concurrency", type=int, default=defaults.concurrency,
                        help="live streams and image requests processed at once, each (videos: one at a time)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores but one)")


def load_engine(checkpoint: Path | None, mano_dir: str | None, engine: str):
    """The demo's predictor loader (the same checkpoint forms and engines as `handmesh demo`)."""
    from handmesh.demo.app import load_predictor

    return load_predictor(checkpoint, mano_dir, engine=engine)


def run(args: argparse.Namespace) -> int:
    from handmesh.serve.app import ServeConfig

    config = ServeConfig(host=args.host, port=args.port, share=args.share, detector=args.detector,
                         max_upload_mb=args.max_upload_mb,
                         max_image_mp=args.max_image_mp, max_video_seconds=args.max_video_seconds,
                         live_seconds=args.live_seconds, concurrency=args.concurrency)
    if min(config.max_upload_mb, config.max_image_mp, config.max_video_seconds, config.concurrency) <= 0:
        raise HandmeshError("--max-upload-mb, --max-image-mp, --max-video-seconds and --concurrency: expected "
                            "positive numbers")
    import torch

    import handmesh.inference  # noqa: F401 - timm (and triton's LLVM) before Mesa's GL: the reverse order crashes
    from handmesh.demo.app import default_threads

    torch.set_num_threads(args.threads or default_threads())
    from handmesh.standin import ensure_standin

    ensure_standin(args.mano_dir, command="handmesh serve")
    predictor = load_engine(args.checkpoint, args.mano_dir, args.engine)
    print(f"handmesh serve: model: {predictor.description}", file=sys.stderr)
    workdir = Path(tempfile.mkdtemp(prefix="handmesh-serve-"))
    try:
        serve(config, args, workdir, predictor)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        print(f"handmesh serve: stopped; removed {workdir}", file=sys.stderr)
    return 0


def serve(config, args: argparse.Namespace, workdir: Path, predictor) -> None:
    """Build the page and serve until Ctrl-C or SIGTERM; Gradio's files go to workdir."""
    os.environ["GRADIO_TEMP_DIR"] = str(workdir / "gradio")  # read when gradio is imported, below
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio  # noqa: F401 - after GRADIO_TEMP_DIR is set

    from handmesh.demo.app import model_warnings, sigterm_as_interrupt
    from handmesh.serve.app import Server, build_app
    from handmesh.serve.frames import GLWorker
    from handmesh.serve.live import LiveSessions
    from handmesh.serve.live_page import live_js, live_routes

    gl = GLWorker(args.renderer)
    page = sessions = None
    try:
        server = Server(config, predictor, gl, workdir, [predictor.description.split(";")[0],
                                                         *model_warnings(predictor)])
        sessions = LiveSessions(predictor, gl, server.status_lines, config.concurrency, config.live_seconds,
                                int(config.max_image_mp * 1e6))
        page = build_app(server)
        with sigterm_as_interrupt():
            print(f"handmesh serve: temporary files in {workdir}", file=sys.stderr)
            try:
                page.launch(server_name=config.host, server_port=config.port or None, share=config.share,
                            max_file_size=f"{config.max_upload_mb:g}mb", show_error=True, ssr_mode=False,
                            inbrowser=False, quiet=False, js=live_js(),
                            app_kwargs={"routes": live_routes(sessions, int(config.max_upload_mb * 2**20))})
            except OSError as error:  # the port is taken, or the address is not this machine's
                raise HandmeshError(f"cannot listen on {config.host}:{config.port} ({error}); expected a free "
                                    "port and a local address: pick another --port or --host") from None
    except KeyboardInterrupt:
        pass
    finally:
        if page is not None:
            page.close()
        if sessions is not None:
            sessions.close()
        gl.close()
