"""`handmesh view ROOT`: a contact sheet of a FreiHAND-format folder with each sample's 2D skeleton (finger colours)
and mesh silhouette outline drawn from its annotations, to check data (and augmentation) by eye. A caption under the
tiles says when the data (`handmesh synth`) or the outlines' hand model is the stand-in, not MANO."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import cv2
import numpy as np

from handmesh.atomic import write_bytes_atomic
from handmesh.cli_values import check_can_write
from handmesh.errors import DataError
from handmesh.joints import BONES

FINGER_COLOURS = ((230, 60, 60), (240, 170, 40), (80, 200, 80), (60, 150, 240), (190, 90, 230))  # RGB, thumb..pinky
OUTLINE_COLOUR = (255, 255, 255)
CAPTION_COLOUR = (255, 200, 60)  # RGB
FONT, FONT_SCALE = cv2.FONT_HERSHEY_SIMPLEX, 0.35


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("root", help="FreiHAND-format folder (FreiHAND_pub_v2 or a `handmesh synth` output)")
    parser.add_argument("--split", choices=("training", "evaluation"), default="training")
    parser.add_argument("--n", type=int, default=16, help="samples on the sheet, spread evenly over the split")
    parser.add_argument("--out", default="sheet.png", help="PNG to write (default: sheet.png)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out when it exists")
    parser.add_argument("--mano-dir", default=None,
                        help="hand model whose faces draw the mesh outline (default: resolved)")
    parser.add_argument("--size", type=int, default=224, help="tile side, pixels (the dataset's input_size)")
    parser.add_argument("--augment", action="store_true", help="show training augmentation (default strengths)")
    parser.add_argument("--seed", type=int, default=0, help="augmentation seed")


def silhouette_outline(vertices_2d: np.ndarray, faces: np.ndarray, size: int) -> list[np.ndarray]:
    """Outer contours of the filled projected triangles. vertices_2d (778, 2) px, faces (F, 3) -> OpenCV contours."""
    mask = np.zeros((size, size), dtype=np.uint8)
    triangles = np.round(vertices_2d[faces] * 16).astype(np.int32)  # (F, 3, 2), 4 sub-pixel bits
    cv2.fillPoly(mask, list(triangles), 255, lineType=cv2.LINE_8, shift=4)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    return list(contours)


def draw_annotations(image: np.ndarray, keypoints_2d: np.ndarray, vertices_2d: np.ndarray | None,
                     faces: np.ndarray | None) -> np.ndarray:
    """(S, S, 3) uint8 RGB -> copy with the mesh outline and the 21-keypoint skeleton (bones coloured by finger)."""
    out = image.copy()
    size = image.shape[0]
    if vertices_2d is not None and faces is not None:
        cv2.drawContours(out, silhouette_outline(vertices_2d, faces, size), -1, OUTLINE_COLOUR, 1, cv2.LINE_AA)
    scale = 16
    points = np.round(keypoints_2d * scale).astype(np.int32)
    thickness = max(1, size // 160)
    for bone_index, (parent, child) in enumerate(BONES):
        colour = FINGER_COLOURS[bone_index // 4]
        cv2.line(out, tuple(points[parent]), tuple(points[child]), colour, thickness, cv2.LINE_AA, shift=4)
    for keypoint, point in enumerate(points):
        colour = (255, 255, 255) if keypoint == 0 else FINGER_COLOURS[(keypoint - 1) // 4]
        cv2.circle(out, tuple(point), (thickness + 1) * scale, colour, -1, cv2.LINE_AA, shift=4)
    return out


def contact_sheet(tiles: list[np.ndarray], labels: list[str], columns: int) -> np.ndarray:
    """Tiles (S, S, 3) uint8 in a grid with a small caption each -> one RGB image."""
    size = tiles[0].shape[0]
    rows = -(-len(tiles) // columns)
    sheet = np.full((rows * (size + 2), columns * (size + 2), 3), 32, dtype=np.uint8)
    for position, (tile, label) in enumerate(zip(tiles, labels)):
        top, left = (position // columns) * (size + 2), (position % columns) * (size + 2)
        tile = tile.copy()
        (width, height), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.35, 1)
        cv2.rectangle(tile, (0, 0), (width + 5, height + 6), (0, 0, 0), -1)
        cv2.putText(tile, label, (3, height + 2), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 255), 1, cv2.LINE_AA)
        sheet[top : top + size, left : left + size] = tile
    return sheet


def standin_notes(root: str | os.PathLike, outline_is_standin: bool) -> list[str]:
    """What the sheet must say about the stand-in: data `handmesh synth` made with it (its marker file says so), and
    outlines drawn with its faces. Empty for FreiHAND drawn with MANO."""
    from handmesh.data.synth import MARKER

    notes = []
    try:
        info = json.loads((Path(root) / MARKER).read_bytes())
    except (OSError, ValueError):
        info = {}
    if info.get("is_standin"):
        notes.append("SYNTHETIC data made with the STAND-IN hand model, not MANO: shapes and poses are illustrative")
    if outline_is_standin:
        notes.append("mesh outlines drawn with the STAND-IN hand model's faces, not MANO's")
    return notes


def _wrap(text: str, width: int) -> list[str]:
    """`text` in lines that fit `width` pixels in the caption font, broken at spaces."""
    lines = [""]
    for word in text.split():
        candidate = f"{lines[-1]} {word}".strip()
        if lines[-1] and cv2.getTextSize(candidate, FONT, FONT_SCALE, 1)[0][0] > width:
            lines.append(word)
        else:
            lines[-1] = candidate
    return lines


def add_caption(sheet: np.ndarray, notes: list[str]) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> the sheet with `notes` written in a band under it (wrapped to its width)."""
    if not notes:
        return sheet
    lines = [line for note in notes for line in _wrap(note, sheet.shape[1] - 8)]
    height = cv2.getTextSize("Ag", FONT, FONT_SCALE, 1)[0][1] + 6
    band = np.full((len(lines) * height + 6, sheet.shape[1], 3), 0, dtype=np.uint8)
    for row, line in enumerate(lines):
        cv2.putText(band, line, (4, (row + 1) * height), FONT, FONT_SCALE, CAPTION_COLOUR, 1, cv2.LINE_AA)
    return np.concatenate([sheet, band], axis=0)


def run(args: argparse.Namespace) -> int:
    import torch

    from handmesh.data.freihand import FreiHANDDataset
    from handmesh.data.transforms import Augmentation, project
    from handmesh.mano import ManoLayer
    from handmesh.mano_file import resolve_mano_dir

    if args.n < 1:
        raise DataError(f"--n is {args.n}; expected at least 1 sample.")
    out = check_can_write(args.out, args.overwrite)
    dataset = FreiHANDDataset(args.root, split=args.split, input_size=args.size,
                              augment=Augmentation() if args.augment else None)
    source = resolve_mano_dir(args.mano_dir)
    print(source.describe())
    faces = ManoLayer.from_dir(source.directory, "right").faces.numpy()
    torch.manual_seed(args.seed)
    positions = np.unique(np.linspace(0, len(dataset) - 1, min(args.n, len(dataset))).round().astype(int))
    tiles, labels = [], []
    for position in positions:
        item = dataset[int(position)]
        image = np.ascontiguousarray(item["image"].permute(1, 2, 0).numpy())  # (S, S, 3) uint8 RGB
        vertices_2d = project(item["vertices"].numpy(), item["K"].numpy())
        tiles.append(draw_annotations(image, item["keypoints_2d"].numpy(), vertices_2d, faces))
        labels.append(f"#{int(item['index'])} id {int(item['sample_id'])} v{int(item['version'])}")
    notes = standin_notes(args.root, source.is_standin)
    sheet = add_caption(contact_sheet(tiles, labels, columns=int(np.ceil(np.sqrt(len(tiles))))), notes)
    out.parent.mkdir(parents=True, exist_ok=True)
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    write_bytes_atomic(out, encoded.tobytes())
    print(f"wrote {out}: {len(tiles)} samples of {args.root} ({args.split})"
          + "".join(f"; captioned: {note}" for note in notes))
    return 0
