"""`handmesh bench --what serve`: the browser demo's live round trip against the CLI demo, on the same clip.

A 640x480 clip of the stand-in hand is generated. The CLI demo runs it headless (box tracker, every frame, the
threaded pipeline). Then `handmesh serve --detector tracker` runs in a subprocess and Debian's chromium (headless,
playwright) plays the same clip as its fake webcam into the Live tab: frames go browser -> server -> browser one at a
time (`handmesh.serve.live_page`), and the rate is the count of frames the server answered over a timed window after
a warm-up, as the page's status line reports it. Both sides use the same torch thread count; the browser shares the
machine's cores.
Goal: serve_to_cli_ratio >= 0.7.
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from pathlib import Path

from handmesh.demo.app import DEFAULT_CHECKPOINT, add_arguments, default_threads, load_predictor, run_demo
from handmesh.demo.overlay import LLVMPIPE_THREADS, llvmpipe_threads
from handmesh.demo.synthetic import write_synthetic_clip
from handmesh.mano_file import resolve_mano_dir
from handmesh.serve.browser import fake_camera_page, live_status, running_server, start_live, wait_for_frames, write_y4m

WIDTH, HEIGHT = 640, 480
FRAMES = {True: 30, False: 90}  # clip length (the CLI's run; the browser loops it)
WINDOW_S = {True: 10.0, False: 30.0}  # the browser's timed window
WARMUP_FRAMES = 5
TARGET_RATIO = 0.7
STAGE_MS = re.compile(r"(detect|infer|render) (\d+)")


def _serve_rate(camera: Path, mano_dir: Path, threads: int, window_s: float, log: Path) -> dict:
    options = ["--detector", "tracker", "--threads", str(threads), "--mano-dir", str(mano_dir)]
    with running_server(options, log) as server, fake_camera_page(camera, server.url) as page:
        start_live(page)
        wait_for_frames(page, WARMUP_FRAMES, timeout_ms=120_000, mesh=False)
        first, _, _ = live_status(page)
        start = time.perf_counter()
        time.sleep(window_s)
        last, _, text = live_status(page)
        seconds = time.perf_counter() - start
    result = {"serve_fps": round((last - first) / seconds, 2), "serve_frames": last - first}
    result.update({f"serve_{stage}_ms": float(ms) for stage, ms in STAGE_MS.findall(text)})  # moving averages
    return result


def run(quick: bool = False) -> dict:
    threads = default_threads()
    with tempfile.TemporaryDirectory(prefix="handmesh-bench-serve-") as folder:
        folder = Path(folder)
        mano_dir = resolve_mano_dir().directory
        predictor = load_predictor(None, str(mano_dir))  # timm before the GL renderer's LLVM (see bench/demo.py)
        with llvmpipe_threads(LLVMPIPE_THREADS):
            clip = write_synthetic_clip(folder / "clip.mp4", mano_dir, frames=FRAMES[quick], width=WIDTH,
                                        height=HEIGHT)
        parser = argparse.ArgumentParser()
        add_arguments(parser)
        stats = run_demo(parser.parse_args([
            "--source", str(clip.path), "--no-window", "--detector", "tracker", "--mano-dir", str(mano_dir),
            "--threads", str(threads), "--out", str(folder / "overlay.mp4"),
        ]), predictor)
        write_y4m(clip.path, folder / "camera.y4m")
        served = _serve_rate(folder / "camera.y4m", mano_dir, threads, WINDOW_S[quick], folder / "server.log")
    result = {
        "frame_size": f"{WIDTH}x{HEIGHT}",
        "model": "quickstart checkpoint" if DEFAULT_CHECKPOINT.is_file() else "untrained fastvit_t8 128px",
        "detector": "tracker",
        "torch_threads": threads,
        "cli_fps": round(stats.steady_fps, 2),
        **served,
        "serve_to_cli_ratio": round(served["serve_fps"] / stats.steady_fps, 3) if stats.steady_fps else 0.0,
    }
    result.update({f"cli_{stage}_ms": round(ms, 2) for stage, ms in stats.stage_ms.items()})
    return result


def format_table(result: dict) -> str:
    def stages(prefix: str) -> str:
        return ", ".join(f"{s} {result[f'{prefix}{s}_ms']:.0f}" for s in ("detect", "infer", "render")
                         if f"{prefix}{s}_ms" in result)

    return "\n".join([
        f"live demo on a generated {result['frame_size']} clip, {result['detector']} detector, {result['model']}, "
        f"{result['torch_threads']} torch thread(s); goal serve / CLI >= {TARGET_RATIO}",
        f"CLI demo (threaded pipeline): {result['cli_fps']:.1f} FPS (mean ms: {stages('cli_')})",
        f"browser round trip (chromium fake camera -> handmesh serve -> page): {result['serve_fps']:.1f} FPS over "
        f"{result['serve_frames']} frames (server ms, moving average: {stages('serve_')})",
        f"ratio {result['serve_to_cli_ratio']:.2f}",
    ])
