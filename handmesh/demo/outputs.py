"""What the demo writes: the overlay video (or image, for an image input), per-frame meshes with a keypoint JSON, and
snapshots.

Everything is written atomically: a video goes to a hidden partial file in the same folder, renamed when finalised
(an interrupted run leaves a finished video or none); meshes, JSON and images are written to a temp name and renamed.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import cv2
import numpy as np
import trimesh

from handmesh.atomic import write_bytes_atomic
from handmesh.cli_values import check_can_write
from handmesh.demo.capture import IMAGE_SUFFIXES
from handmesh.demo.crop import HandEstimate
from handmesh.errors import HandmeshError

# container suffix -> the FourCC OpenCV's FFmpeg writes by default (mp4v: MPEG-4 part 2; VP80: VP8, which browsers play)
VIDEO_CODECS = {".mp4": "mp4v", ".avi": "mp4v", ".mov": "mp4v", ".mkv": "mp4v", ".m4v": "mp4v", ".webm": "VP80"}
VIDEO_SUFFIXES = tuple(VIDEO_CODECS)
IMAGE_OUT_SUFFIX = ".png"  # the overlay of a single image input
MESH_FORMATS = ("obj", "ply")
KEYPOINTS_FILE = "keypoints.json"


def check_outputs(source: str, out: Path | None, stats_json: Path | None, save_meshes: Path | None,
                  overwrite: bool) -> tuple[Path | None, Path | None]:
    """Before a run: `out` names a video, or a .png when `source` is one image; nothing is replaced unless
    `overwrite` (`out`, `stats_json`, `save_meshes`' keypoints.json); their folders exist. -> (out, stats_json),
    absolute."""
    one_image = Path(source).suffix.lower() in IMAGE_SUFFIXES and Path(source).is_file()
    if out is not None:
        suffix = Path(out).suffix.lower()
        if one_image and suffix != IMAGE_OUT_SUFFIX:
            raise HandmeshError(f"--out {out}: the source is one image, whose overlay is written as an image; "
                                f"expected a name ending in {IMAGE_OUT_SUFFIX} (e.g. overlay.png)")
        if not one_image and suffix not in VIDEO_SUFFIXES:
            raise HandmeshError(f"--out {out}: expected a name ending in one of {', '.join(VIDEO_SUFFIXES)} "
                                f"(a video; {IMAGE_OUT_SUFFIX} is for a --source that is one image)")
    checked = []
    for option, path in (("--out", out), ("--stats-json", stats_json)):
        if path is not None:
            path = check_can_write(path, overwrite, option)
            if not path.parent.is_dir():
                raise HandmeshError(f"{option} {path}: the folder {path.parent} does not exist; create it or "
                                    "write elsewhere")
        checked.append(path)
    if save_meshes is not None:
        check_can_write(Path(save_meshes) / KEYPOINTS_FILE, overwrite, "--save-meshes")
    return checked[0], checked[1]


def mesh_bytes(hand: HandEstimate, mesh_format: str) -> bytes | str:
    """The hand's mesh as an .obj or .ply file's content (trimesh)."""
    return trimesh.Trimesh(hand.vertices, hand.faces, process=False).export(file_type=mesh_format)


def png_bytes(image: np.ndarray) -> bytes:
    """image (H, W, 3) uint8 RGB -> a PNG file's content."""
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise HandmeshError(f"could not encode a {image.shape} image as PNG; expected (H, W, 3) uint8")
    return encoded.tobytes()


def write_png(path: str | os.PathLike, image: np.ndarray) -> Path:
    """image (H, W, 3) uint8 RGB as a PNG at `path`, written atomically."""
    path = Path(path)
    if not path.parent.is_dir():
        raise HandmeshError(f"image output {path}: folder {path.parent} does not exist; create it first")
    write_bytes_atomic(path, png_bytes(image))
    return path


class VideoRecorder:
    """cv2.VideoWriter into a partial file; `close()` renames it to `path` if it holds a frame, else deletes it.

    codec: a FourCC such as "mp4v", "VP80" or "avc1" (None: VIDEO_CODECS' for the name's suffix); which ones work
    depends on the FFmpeg that OpenCV was built with."""

    def __init__(self, path: str | os.PathLike, fps: float, size: tuple[int, int], codec: str | None = None):
        self.path = Path(path)
        if self.path.suffix.lower() not in VIDEO_SUFFIXES:
            raise HandmeshError(f"video output {self.path}: expected a name ending in one of "
                                f"{', '.join(VIDEO_SUFFIXES)}")
        self.codec = codec or VIDEO_CODECS[self.path.suffix.lower()]
        if len(self.codec) != 4:
            raise HandmeshError(f"video codec {self.codec!r}: expected a four-character FourCC such as mp4v or VP80")
        if not self.path.parent.is_dir():
            raise HandmeshError(f"video output {self.path}: folder {self.path.parent} does not exist; create it first")
        self.size = size  # (width, height) px
        self.frames = 0
        self._partial = self.path.with_name(f".{self.path.stem}.partial-{os.getpid()}{self.path.suffix}")
        self._writer = cv2.VideoWriter(str(self._partial), cv2.VideoWriter_fourcc(*self.codec), fps, size)
        if not self._writer.isOpened():
            self._partial.unlink(missing_ok=True)
            raise HandmeshError(f"could not open {self.path} for writing with the {self.codec} codec: expected a "
                                "writable folder and a codec this OpenCV's FFmpeg has; check permissions, or use "
                                f"another codec ({', '.join(sorted(set(VIDEO_CODECS.values())))})")

    def write(self, image: np.ndarray) -> None:
        """image (H, W, 3) uint8 RGB, of the size given at the start."""
        if (image.shape[1], image.shape[0]) != self.size:
            raise ValueError(f"frame {image.shape[1]}x{image.shape[0]} differs from the video's "
                             f"{self.size[0]}x{self.size[1]}")
        self._writer.write(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        self.frames += 1

    def close(self) -> Path | None:
        """Finalise: the finished video's path, or None (and no file) when no frame was written. Idempotent."""
        self._writer.release()
        if self.frames == 0:
            self._partial.unlink(missing_ok=True)
            return None
        if self._partial.exists():
            os.replace(self._partial, self.path)
        return self.path


class MeshSaver:
    """Per-frame meshes `frame_000012_right0.obj` in a folder, and `keypoints.json` with every frame's hands."""

    def __init__(self, directory: str | os.PathLike, mesh_format: str, K: np.ndarray, source: str):
        if mesh_format not in MESH_FORMATS:
            raise HandmeshError(f"mesh format {mesh_format!r}: expected one of {', '.join(MESH_FORMATS)}")
        self.directory = Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise HandmeshError(
                f"cannot create the mesh folder {self.directory} ({error}); pass a writable --save-meshes"
            ) from None
        self.mesh_format = mesh_format
        self._record = {"source": source, "intrinsics": np.asarray(K).tolist(), "units": "metres, pixels", "frames": []}
        self.meshes = 0

    def add(self, frame_index: int, time_s: float, hands: list[HandEstimate]) -> None:
        entries = []
        for rank, hand in enumerate(hands):
            name = f"frame_{frame_index:06d}_{hand.side}{rank}.{self.mesh_format}"
            write_bytes_atomic(self.directory / name, mesh_bytes(hand, self.mesh_format), sync=False)  # per frame
            self.meshes += 1
            entries.append(hand_record(hand) | {"mesh": name})
        self._record["frames"].append({"frame": frame_index, "time": round(time_s, 6), "hands": entries})

    def close(self) -> Path:
        path = self.directory / KEYPOINTS_FILE
        write_bytes_atomic(path, json.dumps(self._record))
        return path


def hand_record(hand: HandEstimate) -> dict:
    return {
        "side": hand.side,
        "track_id": hand.track_id,
        "box": hand.box.as_array().round(3).tolist(),  # (cx, cy, size) px
        "keypoints_2d": hand.keypoints_2d.round(3).tolist(),  # (21, 2) px, full frame
        "keypoints_3d": hand.keypoints_3d.round(6).tolist(),  # (21, 3) metres, camera frame
    }


def save_snapshot(
    directory: str | os.PathLike, image: np.ndarray, hands: list[HandEstimate], mesh_format: str
) -> list[Path]:
    """The shown image (PNG) and the current hands' meshes, named by the time; returns the paths written."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    stem = time.strftime("snapshot_%Y%m%d-%H%M%S") + f"_{int(time.time() * 1000) % 1000:03d}"
    write_bytes_atomic(directory / f"{stem}.png", png_bytes(image))
    written = [directory / f"{stem}.png"]
    for rank, hand in enumerate(hands):
        path = directory / f"{stem}_{hand.side}{rank}.{mesh_format}"
        write_bytes_atomic(path, mesh_bytes(hand, mesh_format))
        written.append(path)
    return written
