"""Driving `handmesh serve` from outside, as a user would: the server in a subprocess, Debian's chromium (through
playwright) with a fake camera playing a clip. For the tests and `handmesh bench --what serve`; never imported by the
server itself.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import cv2

from handmesh.errors import HandmeshError

STATUS = "#live-status"  # the Live tab's status line: "frame N: K hand(s), mesh drawn; ..."
FRAME_PATTERN = re.compile(r"frame (\d+): (\d+) hand")


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def write_y4m(video: Path, path: Path, fps: int = 30) -> tuple[int, int]:
    """A video as raw YUV 4:2:0 (.y4m), which chromium's fake camera plays in a loop; returns (width, height)."""
    capture = cv2.VideoCapture(str(video))
    size = None
    with open(path, "wb") as out:
        while (read := capture.read())[0]:
            frame = read[1]
            if size is None:
                size = (frame.shape[1], frame.shape[0])
                out.write(f"YUV4MPEG2 W{size[0]} H{size[1]} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
            out.write(b"FRAME\n" + cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420).tobytes())
    capture.release()
    if size is None:
        raise HandmeshError(f"{video}: no frame could be read to make the fake camera's clip")
    return size


@dataclass
class RunningServer:
    url: str
    process: subprocess.Popen
    log: Path

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM (as Ctrl-C), then the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()


@contextmanager
def running_server(options: list[str], log: Path, cwd: Path | None = None, env: dict | None = None,
                   startup_s: float = 180):
    """`handmesh serve --port <free> *options` in a subprocess until the block ends; yields a RunningServer."""
    port = free_port()
    root = Path(__file__).resolve().parents[2]
    environment = dict(os.environ if env is None else env)
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), environment.get("PYTHONPATH")]))
    environment["PYTHONUNBUFFERED"] = "1"  # gradio's "Running on" line reaches the log as it is printed
    url = f"http://127.0.0.1:{port}/"
    with open(log, "w") as sink:
        process = subprocess.Popen([sys.executable, "-m", "handmesh.cli", "serve", "--port", str(port), *options],
                                   cwd=cwd, env=environment, stdout=sink, stderr=subprocess.STDOUT)
        server = RunningServer(url, process, log)
        try:
            deadline = time.monotonic() + startup_s
            while f"Running on local URL:  {url.rstrip('/')}" not in log.read_text():
                if process.poll() is not None or time.monotonic() > deadline:
                    raise HandmeshError(f"handmesh serve did not start:\n{log.read_text()[-3000:]}")
                time.sleep(0.5)
            yield server
        finally:
            server.stop()


@contextmanager
def fake_camera_page(camera: Path, url: str, viewport: tuple[int, int] = (1280, 1000), allow: bool = True):
    """A headless chromium page at url whose webcam plays `camera` (.y4m); playwright drives Debian's chromium.
    allow=False: the browser refuses the page the camera, as a user who says no."""
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    if executable is None:
        raise HandmeshError("chromium is not installed: run `make browser-deps` (Debian: apt-get install chromium)")
    with sync_playwright() as playwright:
        permission = "--use-fake-ui-for-media-stream" if allow else "--deny-permission-prompts"
        browser = playwright.chromium.launch(executable_path=executable, headless=True, args=[
            permission, "--use-fake-device-for-media-stream", f"--use-file-for-fake-video-capture={camera}",
            "--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
            page.goto(url)
            yield page
        finally:
            browser.close()


def start_live(page, timeout_ms: float = 60_000) -> None:
    """Press Start in the Live tab (the fake camera is granted by the browser's flags)."""
    page.click("#live-start", timeout=timeout_ms)


def stop_live(page) -> None:
    page.click("#live-stop")


def live_overlay(page) -> bytes:
    """The encoded image the Live tab shows now (JPEG bytes; the page holds it as a blob: URL)."""
    import base64

    data_url = page.evaluate("""async () => {
      const image = await (await fetch(document.getElementById("live-output").src)).blob();
      return await new Promise((resolve) => {
        const reader = new FileReader(); reader.onload = () => resolve(reader.result); reader.readAsDataURL(image); });
    }""")
    return base64.b64decode(data_url.split(",", 1)[1])


def live_status(page) -> tuple[int, int, str]:
    """(frames processed, hands in the last one, the status line) from the Live tab; (0, 0, text) before any."""
    text = page.locator(STATUS).text_content() or ""
    match = FRAME_PATTERN.search(text)
    return (int(match.group(1)), int(match.group(2)), text) if match else (0, 0, text)


def wait_for_frames(page, count: int, timeout_ms: float = 60_000, mesh: bool = True) -> None:
    """Until the status says at least `count` frames were processed (the last with a hand and its mesh drawn)."""
    pattern = r"mesh drawn" if mesh else r""
    page.wait_for_function(
        "([count, pattern]) => { const t = document.querySelector('#live-status').textContent;"
        " const m = /frame (\\d+): [1-9]\\d* hand/.exec(t);"
        " return m && +m[1] >= count && new RegExp(pattern).test(t); }",
        arg=[count, pattern], timeout=timeout_ms)
