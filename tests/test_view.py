"""`handmesh view`: the contact sheet says when its data or its outlines come from the stand-in, not MANO."""

from __future__ import annotations

import cv2
import numpy as np

from handmesh.cli import main
from handmesh.commands.view import CAPTION_COLOUR, FONT, FONT_SCALE, _wrap, add_caption, standin_notes

SIZE = 64


def test_a_sheet_of_standin_data_is_captioned(tiny_root, tmp_path, capsys):
    out = tmp_path / "sheet.png"
    assert main(["view", str(tiny_root), "--n", "2", "--size", str(SIZE), "--out", str(out)]) == 0
    assert "captioned: SYNTHETIC data made with the STAND-IN hand model" in capsys.readouterr().out
    sheet = cv2.cvtColor(cv2.imread(str(out)), cv2.COLOR_BGR2RGB)
    tiles_height, tiles_width = SIZE + 2, 2 * (SIZE + 2)  # two tiles side by side
    assert sheet.shape[1] == tiles_width and sheet.shape[0] > tiles_height + 20  # two notes, wrapped to the width
    band = sheet[tiles_height:].reshape(-1, 3).astype(int)
    assert (band.sum(axis=1) > 0).sum() > 200  # text on the black band
    assert np.abs(band[band.sum(axis=1).argmax()] - np.array(CAPTION_COLOUR)).max() <= 2  # in the caption colour


def test_freihand_drawn_with_mano_has_no_caption(tmp_path):
    assert standin_notes(tmp_path, outline_is_standin=False) == []  # no handmesh_synth.json: not synthetic data
    assert standin_notes(tmp_path, outline_is_standin=True) == [
        "mesh outlines drawn with the STAND-IN hand model's faces, not MANO's"]
    sheet = np.zeros((10, 20, 3), np.uint8)
    assert add_caption(sheet, []) is sheet


def test_caption_lines_fit_the_sheet():
    text = "SYNTHETIC data made with the STAND-IN hand model, not MANO: shapes and poses are illustrative"
    lines = _wrap(text, 120)
    assert len(lines) > 1 and " ".join(lines) == text
    assert all(cv2.getTextSize(line, FONT, FONT_SCALE, 1)[0][0] <= 120 for line in lines)
