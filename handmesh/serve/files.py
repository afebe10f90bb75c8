"""Uploads checked and decoded; results written: overlay PNG, meshes (.glb, .obj, .ply), keypoint JSON, video, zip.

Everything is written inside one request's folder under the server's temporary folder; the demo's writers
(`handmesh.demo.outputs`) write the meshes, keypoints and per-frame folders.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import warnings
import zipfile
from pathlib import Path

import cv2
import numpy as np
import trimesh

from handmesh.atomic import atomic_path, write_bytes_atomic
from handmesh.demo.crop import HandEstimate, crop_hand
from handmesh.demo.outputs import hand_record, mesh_bytes
from handmesh.errors import HandmeshError

GLTF_FROM_CAMERA = np.diag([1.0, -1.0, -1.0])  # (3, 3) camera frame (y down, z forward) -> glTF (y up, z back)
MESH_RGBA = (204, 158, 133, 255)  # the overlay's skin colour (handmesh.render.SKIN_RGB), for the 3D view


class UploadError(HandmeshError):
    """An upload is not what its tab expects (format, size, length)."""


def payload_path(payload) -> Path | None:
    """The file behind a Gradio FileData payload (dict or object), or None when there is none."""
    if isinstance(payload, dict) and isinstance(payload.get("video"), dict):  # a gr.Video value: {"video": FileData}
        payload = payload["video"]
    if payload is None:
        return None
    path = payload.get("path") if isinstance(payload, dict) else getattr(payload, "path", None)
    return Path(path) if path else None


def payload_data_url(payload) -> str | None:
    url = payload.get("url") if isinstance(payload, dict) else getattr(payload, "url", None)
    return url if isinstance(url, str) and url.startswith("data:") else None


def decode_image(payload, max_pixels: int) -> np.ndarray:
    """An uploaded image (file, data URL or the encoded bytes) -> (H, W, 3) uint8 RGB, EXIF orientation applied.

    Refuses (UploadError) what is not an image PIL decodes, and images over max_pixels (read from the header, before
    decoding).
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    source: object
    url = payload_data_url(payload) if payload is not None else None
    if isinstance(payload, bytes):
        source, name = io.BytesIO(payload), "the frame"
    elif url is not None:
        try:
            source = io.BytesIO(base64.b64decode(url.split(",", 1)[1], validate=False))
        except (binascii.Error, IndexError):
            raise UploadError("the image data URL is not base64: expected a PNG or JPEG image") from None
        name = "the image"
    else:
        source = payload_path(payload)
        if source is None:
            raise UploadError("no image: upload a PNG or JPEG image, or take a webcam snapshot, then press Run")
        name = f"the upload {Path(source).name!r}"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise UploadError(f"{name} is {width}x{height} = {width * height / 1e6:.0f} MP: expected at most "
                                      f"{max_pixels / 1e6:.0f} MP; scale it down (or start the server with a larger "
                                      "--max-image-mp)")
                if isinstance(payload, bytes) and image.format == "JPEG" and image.getexif().get(0x0112, 1) == 1:
                    decoded = cv2.imdecode(np.frombuffer(payload, np.uint8), cv2.IMREAD_COLOR)  # 3x faster than PIL
                    if decoded is not None:
                        return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)
                image = ImageOps.exif_transpose(image).convert("RGB")
                return np.ascontiguousarray(np.asarray(image, dtype=np.uint8))
    except UploadError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UploadError(f"{name} is not an image this server can read: expected a PNG, JPEG, WebP or BMP file "
                          f"of at most {max_pixels / 1e6:.0f} MP") from None
    except (OSError, ValueError, SyntaxError) as error:
        raise UploadError(f"{name} could not be decoded ({error}): expected a complete PNG or JPEG file; "
                          "check that the file is not truncated") from None


def check_video(path: Path, max_seconds: float, max_side: int) -> tuple[int | None, float]:
    """(frame count or None, fps) of a video OpenCV reads, refused (UploadError) when over max_seconds or max_side."""
    capture = cv2.VideoCapture(str(path))
    try:
        ok, first = capture.read() if capture.isOpened() else (False, None)
        if not ok or first is None:
            raise UploadError(f"{path.name!r} is not a video this server can decode: expected an mp4, webm, avi or "
                              "mkv file; check that it is complete")
        fps = capture.get(cv2.CAP_PROP_FPS) or 30.0
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    finally:
        capture.release()
    if count is not None and count / fps > max_seconds:
        raise UploadError(f"{path.name!r} lasts {count / fps:.1f} s: expected at most {max_seconds:g} s; cut it "
                          "(or start the server with a larger --max-video-seconds)")
    if max(first.shape[:2]) > max_side:
        raise UploadError(f"{path.name!r} is {first.shape[1]}x{first.shape[0]}: expected at most {max_side} px a "
                          "side; scale it down")
    return count, fps


def write_png(path: Path, image: np.ndarray) -> Path:
    """image (H, W, 3) uint8 RGB -> PNG at path."""
    ok, png = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise HandmeshError(f"could not encode the {image.shape} overlay as PNG")
    write_bytes_atomic(path, png.tobytes())
    return path


def write_meshes(directory: Path, hands: list[HandEstimate]) -> list[Path]:
    """hands.glb (every hand, glTF axes, for the 3D view) and each hand's .obj and .ply (camera frame, metres)."""
    scene = trimesh.Scene()
    for rank, hand in enumerate(hands):
        mesh = trimesh.Trimesh(hand.vertices @ GLTF_FROM_CAMERA.T, hand.faces, process=False)
        mesh.visual.vertex_colors = np.tile(MESH_RGBA, (len(hand.vertices), 1))
        scene.add_geometry(mesh, node_name=f"{hand.side}{rank}")
    paths = [directory / "hands.glb"]
    write_bytes_atomic(paths[0], scene.export(file_type="glb"))
    for rank, hand in enumerate(hands):
        for mesh_format in ("obj", "ply"):
            path = directory / f"{hand.side}{rank}.{mesh_format}"
            write_bytes_atomic(path, mesh_bytes(hand, mesh_format))
            paths.append(path)
    return paths


def mano_parameters(predictor, image: np.ndarray, hands: list[HandEstimate], K: np.ndarray) -> list[dict] | None:
    """Each hand's MANO pose (axis-angle, radians) and shape, from the model run again on the hands' crops.

    The model reconstructs right hands: a left hand's parameters are the right-hand model's in the mirrored camera
    (x -> -x), as `handmesh.demo.crop` explains. None when the predictor exposes no torch model.
    """
    import torch

    from handmesh.geometry import rotmat_to_axis_angle

    model = getattr(predictor, "model", None)  # an ONNX engine has none
    if model is None:
        return None
    if not hands:
        return []
    crops = [crop_hand(image, hand.box, K, predictor.input_size, hand.is_left) for hand in hands]
    images = torch.from_numpy(np.stack([c.image for c in crops])).permute(0, 3, 1, 2)  # (B, 3, S, S) uint8
    K_crops = torch.from_numpy(np.stack([c.K for c in crops])).float()
    device = getattr(predictor, "device", "cpu")
    with torch.inference_mode():
        output = model(images.to(device).contiguous(), K_crops.to(device))
    pose = rotmat_to_axis_angle(output.pose_rotmat.float()).cpu().numpy()  # (B, 16, 3) radians
    betas = output.betas.float().cpu().numpy()  # (B, 10)
    return [{"global_orient": pose[i, 0].round(6).tolist(), "hand_pose": pose[i, 1:].reshape(-1).round(6).tolist(),
             "betas": betas[i].round(6).tolist(), "mirrored": bool(hand.is_left)} for i, hand in enumerate(hands)]


def write_keypoints_json(path: Path, hands: list[HandEstimate], K: np.ndarray, size: tuple[int, int],
                         model: str, mano: list[dict] | None) -> Path:
    """The hands' keypoints (2D px, 3D metres in the camera frame), boxes, and MANO parameters, as JSON."""
    record = {
        "image_size": list(size),  # (width, height) px, as processed
        "intrinsics": np.asarray(K).round(6).tolist(),  # (3, 3) px, assumed: f = max(W, H), centred
        "units": "keypoints_2d px; keypoints_3d metres, camera frame (x right, y down, z forward), FreiHAND order",
        "model": model,
        "hands": [hand_record(hand) for hand in hands],
    }
    if mano is not None:
        record["mano_note"] = ("MANO pose: global_orient (3) + hand_pose (15 x 3) axis-angle radians, MANO joint "
                               "order; betas (10). mirrored: parameters of the right-hand model in the mirrored "
                               "camera (x -> -x)")
        for entry, parameters in zip(record["hands"], mano):
            entry["mano"] = parameters
    write_bytes_atomic(path, json.dumps(record, indent=1))
    return path


def zip_folder(folder: Path, path: Path) -> Path:
    """Every file of folder (flat) into the zip at path."""
    with atomic_path(path) as partial, zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for member in sorted(folder.iterdir()):
            archive.write(member, member.name)
    return path
