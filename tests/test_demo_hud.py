"""The HUD scaled to the frame (never over the hand on small frames, no line cut off), its frame rate, and the run's
summary line: a steady rate that the per-stage times allow, and no rate for a single image."""

import numpy as np
import pytest

from handmesh.demo.crop import Box
from handmesh.demo.hud import (
    SMALL_FRAME_SHARE,
    HudLine,
    RateMeter,
    draw_box,
    draw_hud,
    draw_text_block,
    hud_lines,
    hud_style,
    layout,
    text_width,
    wrap_line,
)
from handmesh.demo.stats import DemoStats, steady_rate

STAGE_MS = {"capture": 1.3, "detect": 21.7, "infer": 44.2, "render": 9.6}
STATUS = ["fastvit_t8 128px mlp head, trained (step 975) from /home/someone/runs/quickstart/model.ckpt",
          "UNTRAINED model (random weights): the mesh is not a reconstruction",
          "STAND-IN hand model, not MANO: results are illustrative"]
STATE = ["mediapipe", "onnxruntime", "smoothing on", "REC 120", "no hand in view"]


def busy_rates(frames: int = 10, interval: float = 0.05) -> RateMeter:
    rates = RateMeter()
    for index in range(frames):
        rates.add_stages(STAGE_MS)
        rates.tick(index * interval)
    return rates


def hud_rows(image: np.ndarray, drawn: np.ndarray) -> np.ndarray:
    """The rows of the frame that the HUD changed."""
    return np.flatnonzero((drawn != image).any(axis=(1, 2)))


@pytest.mark.parametrize("key_help", [False, True])
def test_on_a_224_px_frame_the_hud_keeps_to_a_thin_band_and_shows_rate_and_warnings(key_help):
    rng = np.random.default_rng(0)
    image = rng.integers(40, 220, (224, 224, 3), dtype=np.uint8)
    drawn = draw_hud(image, [], busy_rates(), STATE, STATUS, key_help=key_help)
    rows = hud_rows(image, drawn)
    assert len(rows) > 0 and len(rows) <= SMALL_FRAME_SHARE * 224 < 0.15 * 224 + 1
    centre = slice(224 // 4, 3 * 224 // 4)  # where the hand is framed
    assert not (drawn[centre, centre] != image[centre, centre]).any()
    placed = layout(hud_lines(busy_rates(), STATE, STATUS, key_help), 224, hud_style(224, 224))
    assert placed[0] and "FPS" in placed[0][0] and "infer 44" in placed[0][0]  # the rates, the warnings: on one row
    assert placed[1] == ["UNTRAINED model | STAND-IN hand model, not MANO"]


@pytest.mark.parametrize("size", [(224, 224), (320, 240), (640, 480), (1280, 720), (1920, 1080)])
def test_no_text_runs_off_the_right_edge(size):
    width, height = size
    image = np.zeros((height, width, 3), np.uint8)
    drawn = draw_hud(image, [], busy_rates(), STATE, STATUS, key_help=True)
    columns = np.flatnonzero((drawn != image).any(axis=(0, 2)))
    assert columns.max() < width - 1  # the band and its text end inside the frame
    text_columns = np.flatnonzero((drawn > 200).any(axis=(0, 2)))  # the white text (the band only darkens)
    assert text_columns.max() < width - hud_style(width, height).margin // 2 - 1


def test_larger_frames_show_more_lines_with_larger_text():
    small, large = hud_style(224, 224), hud_style(1280, 720)
    assert large.scale > small.scale and large.max_rows > small.max_rows
    image = np.full((720, 1280, 3), 128, np.uint8)
    drawn = draw_hud(image, [], busy_rates(), STATE, STATUS, key_help=True)
    rows = hud_rows(image, drawn)
    assert len(rows) <= 0.2 * 720 and rows.max() == 719  # the key help at the bottom, all within the share


def test_wrapping_keeps_every_word_and_each_row_fits():
    scale, width = 0.3, 150
    line = HudLine.of("model from /a/very/long/folder/name/that/does/not/fit/anywhere/model.ckpt | engine torch")
    rows = wrap_line(line, width, scale)
    assert len(rows) > 1 and all(text_width(row, scale) <= width for row in rows)
    assert "".join(rows).replace(" ", "") == "".join(line.pieces[0][0] + line.pieces[1][0]).replace(" ", "") \
        .replace("|", "")


def test_plain_text_lines_still_draw_within_the_share():
    image = np.zeros((224, 224, 3), np.uint8)
    draw_text_block(image, [(text, (255, 255, 255)) for text in STATUS * 3])
    assert len(hud_rows(np.zeros_like(image), image)) <= SMALL_FRAME_SHARE * 224


def test_box_label_near_the_right_edge_is_moved_inside_not_cut():
    image = np.zeros((224, 224, 3), np.uint8)
    label = "put your hand in the box"
    draw_box(image, Box(190, 112, 60), label)  # the box spans x 160..220; the label is wider than what is right of 160
    above = np.flatnonzero(image[: 112 - 30 - 1].any(axis=(0, 2)))  # columns with label pixels, above the box
    assert above.max() - above.min() + 1 >= 0.9 * text_width(label, hud_style(224, 224).scale)
    assert above.max() < 223


def test_rate_is_averaged_over_frame_intervals_not_the_last_one():
    rates = RateMeter(window=4)
    assert rates.fps is None and "FPS" not in rates.summary()  # one image: no rate at all
    for now in (0.0, 0.1, 0.2, 0.3, 0.301):  # a burst at the end: 1 / last interval would be 1000 FPS
        rates.tick(now)
    assert rates.fps == pytest.approx(4 / 0.301)
    rates.add_stages(STAGE_MS)
    assert rates.summary().startswith("13.3 FPS | ms: capture 1")


def pipelined_run(frames: int, warmup_s: float = 0.5, infer_ms: float = 40.0):
    """Times of a 4-stage run whose infer stage (the slowest) takes infer_ms, and whose renderer started late: the
    frames inferred meanwhile wait in the queues and then come out in a burst."""
    starts, timings, outputs = [], [], []
    for index in range(frames):
        infer_start = 0.01 + index * infer_ms / 1e3
        render_start = max(warmup_s, infer_start + infer_ms / 1e3, outputs[-1] if outputs else 0.0)
        outputs.append(render_start + 0.002)
        starts.append({"capture": infer_start - 0.01, "infer": infer_start, "render": render_start})
        timings.append({"capture": 1.0, "infer": infer_ms, "render": 2.0})
    return outputs, starts, timings


def test_steady_rate_never_exceeds_what_the_slowest_stage_allows():
    outputs, starts, timings = pipelined_run(12)
    naive = (len(outputs) - 1 - 3) / (outputs[-1] - outputs[3])  # frames out after the warm-up / their span
    assert naive > 1.5 * 25  # the burst: more frames per second than a 40 ms stage can do
    fps, stage_ms = steady_rate(outputs, starts, timings)
    assert stage_ms == {"capture": 1.0, "infer": 40.0, "render": 2.0}
    assert 0.8 * 25 < fps <= 1000 / stage_ms["infer"]
    long = steady_rate(*pipelined_run(200))[0]
    assert long == pytest.approx(25, rel=0.02)


def test_one_frame_has_no_rate_and_the_summary_says_none():
    fps, stage_ms = steady_rate([0.4], [{"infer": 0.1}], [{"infer": 300.0}])
    assert fps is None and stage_ms == {"infer": 300.0}
    stats = DemoStats(frames=1, seconds=0.4, steady_fps=fps, stage_ms=stage_ms, dropped=0, detector="mediapipe",
                      renderer="gl")
    line = stats.summary()
    assert line.startswith("1 frame in 0.4 s;") and "/s" not in line and "FPS" not in line and "infer 300.0" in line


def test_summary_rate_and_stage_times_agree():
    outputs, starts, timings = pipelined_run(12)
    fps, stage_ms = steady_rate(outputs, starts, timings)
    stats = DemoStats(frames=12, seconds=outputs[-1], steady_fps=fps, stage_ms=stage_ms, dropped=0,
                      detector="tracker", renderer="gl", warmup_frames=3)
    line = stats.summary()
    assert f"{fps:.1f} frames/s" in line and "infer 40.0" in line and "after the first 3" in line
