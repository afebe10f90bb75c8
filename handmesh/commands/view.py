"""`handmesh view ROOT`: a contact sheet of a FreiHAND-format folder with each sample's 2D skeleton (finger colours)
and mesh silhouette outline drawn from its annotations, to check data (and augmentation) by eye."""

from __future__ import annotations

import argparse

import cv2
import numpy as np

from handmesh.atomic import write_bytes_atomic
from handmesh.cli_values import check_can_write
from handmesh.errors import DataError
from handmesh.joints import BONES

FINGER_COLOURS = ((230, 60, 60), (240, 170, 40), (80, 200, 80), (60, 150, 240), (190, 90, 230))  # RGB, thumb..pinky
OUTLINE_COLOUR = (255, 255, 255)


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
    sheet = contact_sheet(tiles, labels, columns=int(np.ceil(np.sqrt(len(tiles)))))
    out.parent.mkdir(parents=True, exist_ok=True)
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    write_bytes_atomic(out, encoded.tobytes())
    print(f"wrote {out}: {len(tiles)} samples of {args.root} ({args.split})")
    return 0
