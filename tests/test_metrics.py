"""The batched FreiHAND measures against the slow per-sample reference of the official loop, and known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from handmesh import metrics_reference as reference
from handmesh.freihand_metric import FreiHANDMetric
from handmesh.fscore import f_score
from handmesh.metrics import (
    PER_SAMPLE_KEYS,
    SCORE_KEYS,
    fit_similarity,
    pck_auc,
    per_sample_scores,
    procrustes_align,
)
from handmesh.threads import torch_threads

torch.set_num_threads(1)


def random_set(num: int, seed: int = 0, noise: float = 0.006, num_pred_vertices: int = 778):
    """Hand-sized point clouds 0.6 m in front of the camera and noisy, offset predictions (float64 numpy, metres)."""
    rng = np.random.default_rng(seed)
    gt_xyz = rng.normal(size=(num, 21, 3)) * 0.04 + [0.0, 0.0, 0.6]
    gt_verts = rng.normal(size=(num, 778, 3)) * 0.04 + [0.0, 0.0, 0.6]
    offset = rng.normal(size=(num, 1, 3)) * 0.01
    pred_xyz = gt_xyz + offset + rng.normal(size=gt_xyz.shape) * noise
    pred_verts = gt_verts[:, :num_pred_vertices] + offset + rng.normal(size=(num, num_pred_vertices, 3)) * noise
    return gt_xyz, gt_verts, pred_xyz, pred_verts


def torch_scores(gt_xyz, gt_verts, pred_xyz, pred_verts, batch: int = 5) -> dict:
    metric = FreiHANDMetric()
    for start in range(0, len(gt_xyz), batch):
        part = slice(start, start + batch)
        metric.update(*(torch.from_numpy(a[part]) for a in (pred_xyz, pred_verts, gt_xyz, gt_verts)))
    return metric.compute().as_dict()


def assert_scores_close(ours: dict, theirs: dict, rtol: float = 1e-6) -> None:
    assert tuple(ours) == SCORE_KEYS and set(theirs) == set(SCORE_KEYS)
    for key in SCORE_KEYS:
        if theirs[key] is None:
            assert ours[key] is None, key
        else:
            assert ours[key] == pytest.approx(theirs[key], rel=rtol, abs=1e-12), key


def test_every_score_agrees_with_the_official_loop_on_random_data():
    data = random_set(16)
    assert_scores_close(torch_scores(*data), reference.evaluate_reference(*data))


def test_per_sample_values_agree_with_the_official_functions():
    gt_xyz, gt_verts, pred_xyz, pred_verts = random_set(6, seed=1)
    ours = per_sample_scores(*(torch.from_numpy(a) for a in (pred_xyz, pred_verts, gt_xyz, gt_verts)))
    assert tuple(ours) == PER_SAMPLE_KEYS
    for i in range(6):
        aligned_xyz = reference.align_w_scale(gt_xyz[i], pred_xyz[i])
        aligned_verts = reference.align_w_scale(gt_verts[i], pred_verts[i])
        expected = {
            "pa_mpjpe_mm": np.linalg.norm(aligned_xyz - gt_xyz[i], axis=1).mean() * 1000,
            "pa_mpvpe_mm": np.linalg.norm(aligned_verts - gt_verts[i], axis=1).mean() * 1000,
            "mpjpe_mm": np.linalg.norm(pred_xyz[i] - gt_xyz[i], axis=1).mean() * 1000,
            "mpvpe_mm": np.linalg.norm(pred_verts[i] - gt_verts[i], axis=1).mean() * 1000,
            "f5": reference.calculate_fscore(gt_verts[i], aligned_verts, 0.005)[0],
            "f15": reference.calculate_fscore(gt_verts[i], aligned_verts, 0.015)[0],
            "f5_unaligned": reference.calculate_fscore(gt_verts[i], pred_verts[i], 0.005)[0],
            "f15_unaligned": reference.calculate_fscore(gt_verts[i], pred_verts[i], 0.015)[0],
        }
        for key, value in expected.items():
            assert float(ours[key][i]) == pytest.approx(value, rel=1e-9, abs=1e-12), (i, key)


def test_procrustes_equals_scipy_orthogonal_procrustes_including_reflections():
    rng = np.random.default_rng(2)
    gt = rng.normal(size=(8, 21, 3))
    pred = gt @ Rotation.random(8, random_state=3).as_matrix() * 1.3 + rng.normal(size=(8, 21, 3)) * 0.3
    pred[4:] *= np.array([-1.0, 1.0, 1.0])  # mirrored predictions: the best orthogonal map is a reflection
    ours = procrustes_align(torch.from_numpy(pred), torch.from_numpy(gt)).numpy()
    for i in range(8):
        np.testing.assert_allclose(ours[i], reference.align_w_scale(gt[i], pred[i]), rtol=0, atol=1e-12)
    determinants = torch.linalg.det(fit_similarity(torch.from_numpy(pred), torch.from_numpy(gt)).rotation)
    np.testing.assert_allclose(determinants.numpy(), [1.0] * 4 + [-1.0] * 4, atol=1e-9)


# The official +1e-8 on both Frobenius norms leaves a perfect copy ~1e-8 relative off (e.g. 4e-6 mm on a hand): not 0.
OFFICIAL_EPS_RESIDUAL_MM = 1e-4
# ... so its aligned errors miss only the first PCK threshold (0 mm, `<=`): AUC = 1 - (1/2 of one of 99 intervals).
PERFECT_ALIGNED_AUC = 1 - 0.5 / 99


def test_mirrored_copy_aligns_because_reflections_are_allowed():
    gt = torch.from_numpy(np.random.default_rng(4).normal(size=(3, 50, 3)))
    mirrored = gt * torch.tensor([1.0, -1.0, 1.0], dtype=torch.float64) * 2.0 + 5.0
    assert (procrustes_align(mirrored, gt) - gt).abs().max() < 1e-7  # unit-sized points: 1e-8 relative


def test_identical_sets_score_zero_millimetres_and_f_one():
    gt_xyz, gt_verts, _, _ = random_set(4, seed=5)
    scores = torch_scores(gt_xyz, gt_verts, gt_xyz.copy(), gt_verts.copy())
    for key in ("pa_mpjpe_mm", "pa_mpvpe_mm", "mpjpe_mm", "mpvpe_mm"):
        assert scores[key] < OFFICIAL_EPS_RESIDUAL_MM, key
    for key in ("f5", "f15", "f5_unaligned", "f15_unaligned", "auc_joints", "auc_verts"):
        assert scores[key] == 1.0, key
    assert scores["auc_pa_joints"] == pytest.approx(PERFECT_ALIGNED_AUC, rel=1e-12)
    assert scores["auc_pa_verts"] == pytest.approx(PERFECT_ALIGNED_AUC, rel=1e-12)


def test_rotated_scaled_translated_copy_has_zero_aligned_error_but_not_unaligned():
    gt_xyz, gt_verts, _, _ = random_set(4, seed=6)
    rotation = Rotation.from_rotvec([0.3, -0.5, 0.2]).as_matrix()
    move = lambda points: points @ rotation.T * 1.2 + [0.05, -0.02, 0.1]  # noqa: E731  one transform for both
    scores = torch_scores(gt_xyz, gt_verts, move(gt_xyz), move(gt_verts))
    assert scores["pa_mpjpe_mm"] < OFFICIAL_EPS_RESIDUAL_MM and scores["pa_mpvpe_mm"] < OFFICIAL_EPS_RESIDUAL_MM
    assert scores["f5"] == 1.0 and scores["f15"] == 1.0
    assert scores["auc_pa_joints"] == pytest.approx(PERFECT_ALIGNED_AUC, rel=1e-12)
    assert scores["mpjpe_mm"] > 50 and scores["mpvpe_mm"] > 50 and scores["f15_unaligned"] < 0.5


def test_hand_worked_f_score_with_strict_thresholds():
    # u = 2^-8 m = 3.90625 mm, so every distance below is exact in binary.
    # gt: A(0,0,0) B(3u,0,0) C(8u,0,0); pred: P(0,u,0) Q(3u,2u,0).
    # gt -> nearest pred: A-P = u, B-Q = 2u, C-Q = sqrt(25+4) u = 5.39u.   pred -> nearest gt: P-A = u, Q-B = 2u.
    # t = u:    nothing strictly closer              -> P = 0,   R = 0   -> F = 0 (the 0/0 case)
    # t = 1.5u: A; P                                 -> P = 1/3, R = 1/2 -> F = 2(1/6)/(5/6) = 0.4
    # t = 2u:   B-Q = 2u is not < 2u: same as 1.5u   -> F = 0.4
    # t = 3u:   A, B; P, Q                           -> P = 2/3, R = 1   -> F = 2(2/3)/(5/3) = 0.8
    # t = 6u:   A, B, C; P, Q                        -> F = 1
    u = 2.0**-8
    gt = torch.tensor([[[0, 0, 0], [3 * u, 0, 0], [8 * u, 0, 0]]], dtype=torch.float64) + 0.5
    pred = torch.tensor([[[0, u, 0], [3 * u, 2 * u, 0]]], dtype=torch.float64) + 0.5
    scores = f_score(gt, pred, thresholds=(u, 1.5 * u, 2 * u, 3 * u, 6 * u))
    np.testing.assert_allclose(scores.fscore[0].numpy(), [0.0, 0.4, 0.4, 0.8, 1.0], rtol=1e-15)
    np.testing.assert_allclose(scores.precision[0].numpy(), [0, 1 / 3, 1 / 3, 2 / 3, 1], rtol=1e-15)
    np.testing.assert_allclose(scores.recall[0].numpy(), [0, 0.5, 0.5, 1, 1], rtol=1e-15)
    for t, expected in ((u, 0.0), (1.5 * u, 0.4), (2 * u, 0.4), (3 * u, 0.8), (6 * u, 1.0)):
        assert reference.calculate_fscore(gt[0].numpy(), pred[0].numpy(), t)[0] == pytest.approx(expected)


def test_torch_threads_sets_the_count_and_restores_the_callers():
    torch.set_num_threads(2)
    try:
        with torch_threads(1):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)


def test_hand_worked_pck_auc_counts_equal_errors_and_normalises():
    # One keypoint, two samples with errors 0 and 50 mm. PCK (<=) is 1/2 at every threshold but the last (50 mm,
    # where both count): AUC = (0.5 * 50 mm + 0.5 * 0.5 * 50/99 mm) / 50 mm = 0.5 + 0.25 / 99.
    auc, curve = pck_auc(torch.tensor([[0.0], [0.05]], dtype=torch.float64))
    assert curve[0] == 0.5 and curve[-2] == 0.5 and curve[-1] == 1.0
    assert auc == pytest.approx(0.5 + 0.25 / 99, rel=1e-12)


def test_meshes_without_778_vertices_use_the_joint_transform():
    data = random_set(6, seed=7, num_pred_vertices=500)
    ours = torch_scores(*data)
    assert ours["pa_mpvpe_mm"] is None and ours["mpvpe_mm"] is None and ours["auc_verts"] is None
    assert_scores_close(ours, reference.evaluate_reference(*data))
    # A similarity copy of the hand whose mesh has one extra vertex (779): the joints' transform maps it back.
    gt_xyz, gt_verts, _, _ = random_set(3, seed=8)
    rotation = Rotation.from_rotvec([0.0, 0.4, -0.3]).as_matrix()
    move = lambda points: points @ rotation.T * 0.8 + [0.1, 0.0, -0.1]  # noqa: E731
    mesh = np.concatenate([gt_verts, gt_verts[:, :1]], axis=1)
    copy = torch_scores(gt_xyz, gt_verts, move(gt_xyz), move(mesh))
    assert copy["f5"] == 1.0 and copy["pa_mpjpe_mm"] < OFFICIAL_EPS_RESIDUAL_MM and copy["f5_unaligned"] < 0.2


@pytest.mark.filterwarnings("ignore:The ``compute`` method")  # the merged metric never saw update()
def test_ddp_style_merge_of_summed_states_equals_one_metric():
    gt_xyz, gt_verts, pred_xyz, pred_verts = random_set(10, seed=9)
    tensors = [torch.from_numpy(a) for a in (pred_xyz, pred_verts, gt_xyz, gt_verts)]
    whole, first, second = (FreiHANDMetric(keep_per_sample=True) for _ in range(3))
    whole.update(*tensors)
    first.update(*(t[:4] for t in tensors))
    second.update(*(t[4:] for t in tensors))
    merged = FreiHANDMetric(keep_per_sample=True)
    for name, reduce in merged._reductions.items():  # what a DDP sync does: every state reduced across processes
        values = [getattr(first, name), getattr(second, name)]
        setattr(merged, name, torch.stack(values).sum(0) if reduce is not None and name != "per_sample_rows"
                else [torch.cat([torch.cat(v) for v in values])])
    assert_scores_close(merged.compute().as_dict(), whole.compute().as_dict(), rtol=1e-12)  # sums: order only
    for key, column in whole.per_sample().items():
        assert torch.equal(merged.per_sample()[key], column), key
    states = [name for name in whole._defaults if name != "per_sample_rows"]
    assert all(getattr(whole, name).numel() <= 778 * 100 for name in states)  # O(1) in the number of samples


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_metric_refuses_mixed_vertex_correspondence_and_empty_compute():
    metric = FreiHANDMetric()
    with pytest.raises(ValueError, match="no samples"):
        metric.compute()
    gt_xyz, gt_verts, pred_xyz, pred_verts = random_set(2, seed=10)
    tensors = [torch.from_numpy(a) for a in (pred_xyz, pred_verts, gt_xyz, gt_verts)]
    metric.update(*tensors)
    metric.update(tensors[0], tensors[1][:, :300], tensors[2], tensors[3])
    with pytest.raises(ValueError, match="mixes meshes"):
        metric.compute()


def test_metric_under_half_precision_autocast_matches_float64():
    """Validation under bf16-mixed: the network hands over bfloat16 points; the Procrustes (SVD) runs in float64
    anyway, so the scores are those of the same (rounded) points without autocast."""
    gt_xyz, gt_verts, pred_xyz, pred_verts = (torch.from_numpy(a) for a in random_set(4, seed=3))
    pred_xyz, pred_verts = pred_xyz.bfloat16(), pred_verts.bfloat16()
    plain = FreiHANDMetric()
    plain.update(pred_xyz.double(), pred_verts.double(), gt_xyz, gt_verts)
    mixed = FreiHANDMetric()
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        mixed.update(pred_xyz, pred_verts, gt_xyz.float(), gt_verts.float())
        transform = fit_similarity(pred_xyz, gt_xyz.float())
    assert transform.rotation.dtype == torch.float64
    assert_scores_close(mixed.compute().as_dict(), plain.compute().as_dict(), rtol=1e-5)
