"""Temporal consistency: reprojection, TAE and flicker, shot co-alignment, shared noise (hand-worked values)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from betterdepth_cli.core.reprojection import pose_from_quaternion, relative_pose, reproject_depth, unproject
from betterdepth_cli.core.shot_align import ShotAligner, coalign_prediction, robust_scale_shift
from betterdepth_cli.core.types import DepthPrediction
from betterdepth_cli.evaluation.temporal import (
    clip_depth,
    clip_temporal_scores,
    fit_clip_disparity,
    flicker,
    tae,
    tae_pair,
)

K = np.array([[100.0, 0, 15.5], [0, 100.0, 11.5], [0, 0, 1]])  # 32 x 24 pixels, centre (15.5, 11.5)


def _pose(tx=0.0, ty=0.0, tz=0.0) -> np.ndarray:
    p = np.eye(4)
    p[:3, 3] = [tx, ty, tz]
    return p


# --------------------------------------------------------------------------- geometry


def test_unproject_puts_the_principal_pixel_on_the_axis():
    pts = unproject(np.full((24, 32), 2.0), K)
    np.testing.assert_allclose(pts[11, 15], [-0.01, -0.01, 2.0])  # (15 - 15.5) / 100 * 2
    np.testing.assert_allclose(pts[0, 0], [-0.31, -0.23, 2.0])


def test_relative_pose_moves_points_from_the_first_camera_to_the_second():
    T = relative_pose(_pose(), _pose(tz=0.5))  # the second camera 0.5 m further forward
    np.testing.assert_allclose(T @ [0, 0, 2, 1], [0, 0, 1.5, 1])


def test_quaternion_pose_identity_and_a_quarter_turn_about_z():
    np.testing.assert_allclose(pose_from_quaternion([1, 2, 3], [0, 0, 0, 1])[:3, 3], [1, 2, 3])
    np.testing.assert_allclose(pose_from_quaternion([0, 0, 0], [0, 0, 0, 1])[:3, :3], np.eye(3))
    s = math.sin(math.pi / 4)
    R = pose_from_quaternion([0, 0, 0], [0, 0, s, s])[:3, :3]
    np.testing.assert_allclose(R @ [1, 0, 0], [0, 1, 0], atol=1e-12)


def test_reprojection_of_a_plane_seen_by_a_camera_that_moves_sideways_two_pixels():
    # plane at Z = 2; camera 2 sits 0.04 m to the right: every point moves fx * 0.04 / 2 = 2 pixels left
    depth = np.full((24, 32), 2.0)
    proj = reproject_depth(depth, K, relative_pose(_pose(), _pose(tx=0.04)))
    assert np.all(proj[:, :30] == pytest.approx(2.0))
    assert np.all(proj[:, 30:] == 0)  # nothing lands in the last two columns


def test_reprojection_keeps_the_nearest_point_where_two_land_on_one_pixel():
    depth = np.full((24, 32), 4.0)
    depth[:, 20] = 2.0  # a near column; moving the camera right by 0.04 brings it 2 px left at Z=2, 1 px at Z=4
    proj = reproject_depth(depth, K, relative_pose(_pose(), _pose(tx=0.04)))
    assert proj[5, 18] == pytest.approx(2.0)  # the near column (from 20) beats the far one (from 19)


# --------------------------------------------------------------------------- metrics


def test_tae_of_a_perfect_prediction_is_zero():
    gt = np.stack([np.full((24, 32), 2.0), np.full((24, 32), 1.5)])  # camera moves 0.5 m toward a wall
    assert tae(gt, np.stack([_pose(), _pose(tz=0.5)]), K) == 0.0


def test_tae_of_a_hand_made_two_frame_scene():
    # the wall at 2 m, then 1.5 m; the prediction says 1.65 m in frame 2 (10 % too far)
    pred = np.stack([np.full((24, 32), 2.0), np.full((24, 32), 1.65)])
    poses = np.stack([_pose(), _pose(tz=0.5)])
    forward = abs(1.65 - 1.5) / 1.65  # frame 1 moved into frame 2: 1.5 against 1.65
    backward = abs(2.0 - 2.15) / 2.0  # frame 2 moved back: 2.15 against 2.0
    assert tae_pair(pred[0], pred[1], relative_pose(poses[0], poses[1]), K) == pytest.approx(forward)
    assert tae(pred, poses, K) == pytest.approx(100 * (forward + backward) / 2)


def test_clip_alignment_recovers_one_scale_and_shift_for_the_whole_clip():
    rng = np.random.default_rng(0)
    gt = rng.uniform(1, 5, (3, 8, 8))
    valid = np.ones_like(gt, bool)
    valid[0, 0, 0] = False
    pred = (1 / gt - 0.1) / 2  # disparity = 2 * pred + 0.1
    pred[0, 0, 0] = 1e6  # invalid pixels do not count
    s, b = fit_clip_disparity(pred, gt, valid)
    assert s == pytest.approx(2.0) and b == pytest.approx(0.1)
    np.testing.assert_allclose(clip_depth(pred, s, b, 10.0)[valid], gt[valid])


def test_flicker_is_the_mean_change_over_unchanged_pixels_in_percent_of_the_range():
    gt = np.where(np.arange(16).reshape(4, 4) < 8, 2.0, 1.0)[None].repeat(2, 0)  # disparity 0.5 and 1.0: range 0.5
    valid = np.ones_like(gt, bool)
    disp = 1 / gt
    disp = np.stack([disp[0], disp[1] + 0.01])
    assert flicker(disp, gt, valid) == pytest.approx(100 * 0.01 / 0.5)
    gt2 = gt.copy()
    gt2[1, 0, 0] = 1.5  # a pixel whose ground truth changed is left out (the range stays 0.5 .. 1.0)
    disp2 = disp.copy()
    disp2[1, 0, 0] += 5
    assert flicker(disp2, gt2, valid) == pytest.approx(100 * 0.01 / 0.5)


def test_clip_scores_of_a_flickering_prediction_are_worse_than_of_a_steady_one():
    gt = np.stack([np.full((24, 32), 2.0), np.full((24, 32), 1.5), np.full((24, 32), 1.0)])
    poses = np.stack([_pose(), _pose(tz=0.5), _pose(tz=1.0)])
    valid = np.ones_like(gt, bool)
    steady = clip_temporal_scores(1 / gt, gt, valid, poses, K, 10.0)
    assert steady["tae"] == pytest.approx(0.0, abs=1e-9) and steady["abs_rel"] == pytest.approx(0.0, abs=1e-9)
    jitter = np.array([1.0, 1.2, 0.9])[:, None, None]
    flick = clip_temporal_scores(jitter / gt, gt, valid, poses, K, 10.0)
    assert flick["tae"] > 5 and flick["abs_rel"] > 0.05


# --------------------------------------------------------------------------- co-alignment


def test_robust_fit_recovers_the_affine_map_despite_changed_pixels():
    rng = np.random.default_rng(1)
    base = torch.from_numpy(rng.uniform(0.5, 1.5, (40, 40)))
    target = 2 * base + 1
    target[:5] += 10  # an eighth of the pixels changed (something moved)
    s, b = robust_scale_shift(base, target, torch.ones(40, 40, dtype=torch.bool))
    assert s == pytest.approx(2.0, abs=1e-9) and b == pytest.approx(1.0, abs=1e-9)


def test_shot_aligner_removes_a_known_per_frame_affine_jitter_exactly():
    torch.manual_seed(0)
    base = torch.rand(1, 1, 120, 160, dtype=torch.float64) + 0.5
    valid = torch.ones_like(base, dtype=torch.bool)
    aligner = ShotAligner()
    for a, c in [(1.0, 0.0), (1.1, 0.05), (0.9, -0.03), (1.07, 0.02), (0.95, 0.04)]:
        out = aligner.align(base * a + c, valid)
        torch.testing.assert_close(out, base, rtol=0, atol=1e-6)  # the fit runs on float32 maps
        assert aligner.scale == pytest.approx(1 / a) and aligner.shift == pytest.approx(-c / a)


def test_shot_aligner_restarts_on_a_frame_of_another_size_and_first_frame_defines_units():
    aligner = ShotAligner()
    x = torch.rand(1, 1, 20, 30) + 1
    assert torch.equal(aligner.align(3 * x, torch.ones_like(x, dtype=torch.bool)), 3 * x)
    y = torch.rand(1, 1, 10, 10)
    assert torch.equal(aligner.align(y, torch.ones_like(y, dtype=torch.bool)), y)  # kept s = 1, b = 0


def test_coalign_prediction_aligns_frames_of_one_shot_and_leaves_others():
    base = torch.rand(1, 1, 16, 16) + 1
    values = torch.cat([base, 2 * base + 1, 5 * base])
    pred = DepthPrediction(values=values, valid=torch.ones_like(values, dtype=torch.bool), kind="disparity")
    shot = ShotAligner()
    out = coalign_prediction(pred, [shot, shot, None])
    torch.testing.assert_close(out.values[1], base[0], rtol=0, atol=1e-5)
    assert torch.equal(out.values[2], 5 * base[0])


def test_refine_shot_shares_one_noise_field_across_frames(tiny_model_dir):
    from betterdepth_cli.core.refiner import load_model
    from betterdepth_cli.core.shot import refine_shot

    model = load_model(tiny_model_dir)
    assert not model.zero_noise  # a stochastic model: the noise matters

    class Jitter:
        """A real conditioner's affine ambiguity: frame i's map is scaled by 1 + 0.1 i."""

        def predict(self, images, keys=None):
            disp = images.mean(1, keepdim=True) + 0.5
            gain = torch.tensor([1 + 0.1 * int(k) for k in keys]).reshape(-1, 1, 1, 1)
            return DepthPrediction(values=disp * gain, valid=torch.ones_like(disp, dtype=torch.bool),
                                   kind="disparity")

    img = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))
    frames = [(img, str(i)) for i in range(3)]
    shot = [r.refined for r in refine_shot(frames, conditioner=Jitter(), model=model, seed=3, batch_size=2)]
    torch.testing.assert_close(shot[1], shot[0], rtol=0, atol=1e-5)  # same frame, same noise, co-aligned
    torch.testing.assert_close(shot[2], shot[0], rtol=0, atol=1e-5)
    per = [r.refined for r in refine_shot(frames, conditioner=Jitter(), model=model, seed=3, consistent=False)]
    torch.testing.assert_close(per[0], shot[0])  # frame 0 defines the shot's units
    torch.testing.assert_close(per[1] / per[0], torch.full_like(per[0], 1.1), rtol=1e-4, atol=1e-4)
