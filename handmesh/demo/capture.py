"""Frame sources for the demo: a webcam, a video file, a folder of images, or one image. Frames come out RGB.

`open_source(spec)` checks everything it can before the demo starts (the camera opens and gives a frame, the file
decodes), so bad input fails early with a message and nothing half-done. The pipeline reads sources in a thread.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from handmesh.errors import HandmeshError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
DEFAULT_FPS = 30.0  # timestamps of image folders, and of recordings of sources that report no rate


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


@dataclass
class Frame:
    index: int  # 0, 1, ... in reading order
    time: float  # seconds: capture time for a camera, index / fps otherwise
    image: np.ndarray  # (H, W, 3) uint8 RGB


class _CaptureSource:
    """What a webcam and a video file share: a cv2.VideoCapture whose first frame was read to check it works."""

    single_image = False

    def __init__(self, capture: cv2.VideoCapture, first: np.ndarray, description: str, notify: Callable[[str], None]):
        self._capture = capture
        self._first: np.ndarray | None = first  # handed out by the first read
        self._index = 0  # frames handed out so far
        self._notify = notify
        self.description = description
        self.height, self.width = first.shape[:2]
        self.fps = capture.get(cv2.CAP_PROP_FPS) or DEFAULT_FPS

    def _next_image(self) -> np.ndarray | None:
        """The next (H, W, 3) BGR image, or None when the capture gives no more."""
        if self._first is not None:
            image, self._first = self._first, None
            return image
        ok, image = self._capture.read()
        return image if ok else None

    def _frame(self, image: np.ndarray, time_s: float) -> Frame:
        frame = Frame(self._index, time_s, cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
        self._index += 1
        return frame

    def close(self) -> None:
        self._capture.release()


class CameraSource(_CaptureSource):
    """A live webcam (cv2.VideoCapture by index). Frames are stamped with the time they were read."""

    is_live = True  # frames are dropped when the demo falls behind
    is_video = True  # consecutive frames show the same scene (detectors may track)
    frame_count = None

    def __init__(self, index: int, notify: Callable[[str], None] = _stderr):
        level = cv2.utils.logging.getLogLevel()
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)  # backends' probing noise; we say it better
        try:
            capture = cv2.VideoCapture(index)
        finally:
            cv2.utils.logging.setLogLevel(level)
        if not capture.isOpened():
            raise HandmeshError(
                f"no webcam at index {index}: expected a connected camera (Linux: /dev/video{index}); check it is "
                "plugged in and not used by another program, try another --source index, or pass a video file or "
                "an image folder"
            )
        ok, first = capture.read()
        if not ok or first is None:
            capture.release()
            raise HandmeshError(
                f"webcam {index} opened but gave no frame: it is probably busy in another program; close that "
                "program, or pass another --source"
            )
        super().__init__(capture, first, f"webcam {index}", notify)
        self._start = time.monotonic()

    def read(self) -> Frame | None:
        image = self._next_image()
        if image is None:
            self._notify(f"{self.description} stopped giving frames after {self._index} "
                         "(unplugged or taken by another program)")
            return None
        return self._frame(image, time.monotonic() - self._start)


class VideoSource(_CaptureSource):
    """A video file; every frame in order, stamped index / fps."""

    is_live = False
    is_video = True

    def __init__(self, path: Path, notify: Callable[[str], None] = _stderr):
        capture = cv2.VideoCapture(str(path))
        ok, first = capture.read() if capture.isOpened() else (False, None)
        if not ok or first is None:
            capture.release()
            raise HandmeshError(
                f"could not decode {path} as a video: expected a video file OpenCV reads (mp4, avi, mkv, ...), "
                "an image, or an image folder; check the file is complete"
            )
        super().__init__(capture, first, f"video {path}", notify)
        self.frame_count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None

    def read(self) -> Frame | None:
        image = self._next_image()
        if image is None:
            if self.frame_count and self._index < self.frame_count:
                self._notify(
                    f"{self.description}: decoding stopped at frame {self._index} of {self.frame_count} "
                    "(corrupt or truncated file); the output has the frames read"
                )
            return None
        if image.shape[:2] != (self.height, self.width):
            image = letterbox(image, self.width, self.height)
        return self._frame(image, self._index / self.fps)


class ImageFolderSource:
    """Image files in name order (or one image). Unreadable images are skipped with a message; the frame size is the
    first readable image's, and other sizes are letterboxed into it."""

    is_live = False
    is_video = False

    def __init__(self, paths: list[Path], description: str, notify: Callable[[str], None] = _stderr,
                 single_image: bool = False):
        self.single_image = single_image  # one image file (its overlay is written as an image, not a video)
        self._notify = notify
        self._paths = list(paths)
        self.description = description
        self.fps = DEFAULT_FPS
        self._first: np.ndarray | None = None
        while self._paths and self._first is None:
            self._first = self._load(self._paths.pop(0))
        if self._first is None:
            raise HandmeshError(
                f"no readable image in {description}: expected JPEG/PNG files OpenCV decodes; "
                "check the files are complete"
            )
        self.height, self.width = self._first.shape[:2]
        self.frame_count = 1 + len(self._paths)
        self._index = 0

    def _load(self, path: Path) -> np.ndarray | None:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            self._notify(f"skipping {path}: not a readable image (corrupt, truncated or another format)")
        return image

    def read(self) -> Frame | None:
        image, self._first = self._first, None
        while image is None and self._paths:
            image = self._load(self._paths.pop(0))
        if image is None:
            return None
        if image.shape[:2] != (self.height, self.width):
            image = letterbox(image, self.width, self.height)
        frame = Frame(self._index, self._index / self.fps, cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
        self._index += 1
        return frame

    def close(self) -> None:
        """Nothing to release."""


def letterbox(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Scale (h, w, 3) to fit (height, width), keeping its aspect, centred on black."""
    scale = min(width / image.shape[1], height / image.shape[0])
    w, h = max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale))
    out = np.zeros((height, width, 3), dtype=np.uint8)
    x0, y0 = (width - w) // 2, (height - h) // 2
    out[y0 : y0 + h, x0 : x0 + w] = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    return out


def open_source(spec: str, notify: Callable[[str], None] = _stderr):
    """'0', '1', ... -> webcam; a folder -> its images; an image file -> that image; another file -> a video."""
    if spec.isdigit():
        return CameraSource(int(spec), notify)
    path = Path(spec)
    if path.is_dir():
        images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise HandmeshError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in folder {path}; "
                                "expected a folder of frames")
        return ImageFolderSource(images, f"{len(images)} images in {path}", notify)
    if path.is_file():
        if path.suffix.lower() in IMAGE_SUFFIXES:
            return ImageFolderSource([path], f"image {path}", notify, single_image=True)
        return VideoSource(path, notify)
    raise HandmeshError(
        f"--source {spec!r}: no such file or folder; expected a webcam index (0, 1, ...), a video file, "
        "an image folder or an image"
    )
