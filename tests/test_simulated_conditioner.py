"""training.simulated_conditioner: GT disparity, dense, blurred and warped; read back as a file: conditioner."""

import numpy as np
import pytest
import torch

from training.simulated_conditioner import simulated_disparity, write_maps


def test_no_blur_no_warp_is_the_disparity_with_sky_filled():
    depth = np.array([[1.0, 2.0], [4.0, 0.0]])
    valid = depth > 0
    d = simulated_disparity(depth, valid, sigma=0, warp=0, rng=np.random.default_rng(0))
    # 1/z where valid; the sky gets half the smallest valid disparity (0.25 / 2)
    np.testing.assert_allclose(d, [[1.0, 0.5], [0.25, 0.125]], rtol=1e-6)
    assert d.dtype == np.float32


def test_blur_keeps_a_constant_map_and_the_warp_stays_within_its_amplitude():
    depth = np.full((20, 30), 2.0)
    valid = np.ones_like(depth, bool)
    blurred = simulated_disparity(depth, valid, sigma=3, warp=0, rng=np.random.default_rng(0))
    np.testing.assert_allclose(blurred, 0.5, rtol=1e-6)
    warped = simulated_disparity(depth, valid, sigma=3, warp=0.1, rng=np.random.default_rng(1))
    assert np.all(warped >= 0.5 * 0.9 - 1e-6) and np.all(warped <= 0.5 * 1.1 + 1e-6)
    assert warped.std() > 1e-3  # the warp does vary over the image


def test_blur_softens_a_step():
    depth = np.where(np.arange(40)[None, :] < 20, 1.0, 2.0).repeat(10, 0)
    d = simulated_disparity(depth, depth > 0, sigma=2, warp=0, rng=np.random.default_rng(0))
    assert abs(d[5, 0] - 1.0) < 1e-4  # far from the step: unchanged
    assert 0.5 < d[5, 19] < 1.0 and 0.5 < d[5, 20] < 1.0  # at the step: in between


def test_maps_load_through_the_file_conditioner(tmp_path):
    import cv2

    from betterdepth_cli.conditioner_registry import get_conditioner

    root = tmp_path / "scenes"
    (root / "rgb").mkdir(parents=True)
    (root / "depth").mkdir()
    (root / "dataset.toml").write_text('images = "rgb"\nground_truth = "depth"\nkind = "depth"\nunits = "m"\n')
    for i in range(2):
        cv2.imwrite(str(root / "rgb" / f"s{i}.png"), np.zeros((12, 16, 3), np.uint8))
        np.save(root / "depth" / f"s{i}.npy", np.full((12, 16), 2.0 + i, np.float32))
    assert write_maps("folder", str(root), str(tmp_path / "maps"), sigma=0, warp=0) == 2
    cond = get_conditioner(f"file:{tmp_path / 'maps'}?kind=disparity")
    pred = cond.predict(torch.zeros(2, 3, 12, 16), keys=["s0", "s1"])
    assert pred.kind == "disparity"
    torch.testing.assert_close(pred.values[:, 0, 0, 0], torch.tensor([0.5, 1 / 3]))


def test_sigma_max_draws_each_samples_blur_from_the_range(tmp_path):
    import cv2
    import pytest

    from training.simulated_conditioner import sample_sigma

    # a fixed sigma is returned as is; a range gives seeded draws inside it
    assert sample_sigma(2.5, None, 0, 7) == 2.5 and sample_sigma(2.5, 2.5, 0, 7) == 2.5
    draws = [sample_sigma(2.0, 8.0, 0, k) for k in range(50)]
    assert all(2.0 <= s <= 8.0 for s in draws) and max(draws) - min(draws) > 4.0
    assert draws == [sample_sigma(2.0, 8.0, 0, k) for k in range(50)]
    assert draws != [sample_sigma(2.0, 8.0, 1, k) for k in range(50)]
    with pytest.raises(ValueError, match="below --sigma"):
        sample_sigma(3.0, 2.0, 0, 0)

    # the written maps are the step blurred by each sample's drawn width
    root = tmp_path / "scenes"
    (root / "rgb").mkdir(parents=True)
    (root / "depth").mkdir()
    (root / "dataset.toml").write_text('images = "rgb"\nground_truth = "depth"\nkind = "depth"\nunits = "m"\n')
    step = np.where(np.arange(40)[None, :] < 20, 1.0, 2.0).repeat(10, 0).astype(np.float32)
    for i in range(3):
        cv2.imwrite(str(root / "rgb" / f"s{i}.png"), np.zeros((10, 40, 3), np.uint8))
        np.save(root / "depth" / f"s{i}.npy", step)
    write_maps("folder", str(root), str(tmp_path / "maps"), sigma=1.0, warp=0, sigma_max=6.0)
    for i in range(3):
        want = simulated_disparity(step, step > 0, sample_sigma(1.0, 6.0, 0, i), 0, np.random.default_rng(0))
        np.testing.assert_allclose(np.load(tmp_path / "maps" / f"s{i}.npy"), want, rtol=1e-6)


def test_background_fill_gives_an_occlusion_the_farther_of_its_two_neighbours():
    from training.simulated_conditioner import background_fill

    nan = np.nan
    disp = np.array([[2.0, 2.0, nan, nan, 1.0, 1.0],    # occlusion between near (2) and far (1): far
                     [nan, 3.0, 1.0, 1.0, 1.0, nan],    # runs at the border: their one neighbour
                     [nan, nan, nan, nan, nan, nan],    # nothing known: filled along the columns
                     [4.0, 4.0, 4.0, 0.5, 4.0, 4.0]])
    known = np.isfinite(disp)
    want = np.array([[2.0, 2.0, 1.0, 1.0, 1.0, 1.0],
                     [3.0, 3.0, 1.0, 1.0, 1.0, 1.0],
                     [3.0, 3.0, 1.0, 0.5, 1.0, 1.0],    # min of the filled row above and the row below
                     [4.0, 4.0, 4.0, 0.5, 4.0, 4.0]])
    np.testing.assert_array_equal(background_fill(disp, known), want)
    np.testing.assert_array_equal(background_fill(disp, np.zeros_like(known)), np.ones_like(disp))


def test_simulated_disparity_fills_holes_with_the_background_when_asked():
    depth = np.full((8, 10), 2.0)
    depth[:, :4] = 1.0  # near on the left (disparity 1), far on the right (0.5)
    valid = np.ones((8, 10), bool)
    valid[:, 4:6] = False  # the occluded band beside the near object
    d = simulated_disparity(depth, valid, sigma=0, warp=0, rng=np.random.default_rng(0), fill="background")
    np.testing.assert_allclose(d[:, 4:6], 0.5)  # the far side's disparity, not a hole
    far = simulated_disparity(depth, valid, sigma=0, warp=0, rng=np.random.default_rng(0))
    np.testing.assert_allclose(far[:, 4:6], 0.25)  # the default: half the smallest disparity
    with pytest.raises(ValueError):
        simulated_disparity(depth, valid, sigma=0, warp=0, rng=np.random.default_rng(0), fill="zero")


def test_the_command_fills_holes_with_the_background_when_asked(tmp_path, capsys):
    import cv2

    from training.simulated_conditioner import main

    root = tmp_path / "scenes"
    (root / "rgb").mkdir(parents=True)
    (root / "depth").mkdir()
    (root / "dataset.toml").write_text('images = "rgb"\nground_truth = "depth"\nkind = "depth"\nunits = "m"\n')
    cv2.imwrite(str(root / "rgb" / "s0.png"), np.zeros((6, 8, 3), np.uint8))
    depth = np.full((6, 8), 4.0, np.float32)
    depth[:, :3] = 1.0  # near on the left (disparity 1), far on the right (0.25)
    depth[:, 3:5] = 0.0  # no ground truth beside the near object: an occlusion
    np.save(root / "depth" / "s0.npy", depth)
    for fill, want in (("background", 0.25), ("far", 0.125)):
        out = tmp_path / fill
        main(["folder", str(root), str(out), "--sigma", "0", "--warp", "0", "--fill", fill])
        np.testing.assert_allclose(np.load(out / "s0.npy")[:, 3:5], want)
    assert "1 maps" in capsys.readouterr().out


def test_the_script_gives_one_line_and_the_exit_code(tmp_path):
    """`python -m training.simulated_conditioner` on a missing data root: betterdepth's one line, exit 66."""
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-m", "training.simulated_conditioner", "folder", str(tmp_path / "nope"),
                          str(tmp_path / "out")], capture_output=True, text=True)
    assert res.returncode == 66 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines() == [f"betterdepth: error: folder: data root {tmp_path / 'nope'} does not exist"]


def test_shift_edges_moves_a_near_square_by_the_radius_either_way():
    from training.simulated_conditioner import shift_edges

    disp = np.full((21, 21), 0.25, np.float32)
    disp[8:13, 8:13] = 1.0  # a 5 x 5 near square on a far wall
    fat = shift_edges(disp, 2, fatter=True)
    thin = shift_edges(disp, 1, fatter=False)
    # a disc of radius 2 grows the square's straight sides by 2 px: rows 6..14 at its middle column
    assert np.flatnonzero(fat[:, 10] == 1.0).tolist() == list(range(6, 15))
    assert fat[6, 6] == 0.25  # its corners round off: (2, 2) from the corner is outside a radius-2 disc
    # radius 1 shrinks it to the middle 3 x 3
    assert np.argwhere(thin == 1.0).tolist() == [[r, c] for r in range(9, 12) for c in range(9, 12)]
    assert set(np.unique(fat)) == set(np.unique(thin)) == {np.float32(0.25), np.float32(1.0)}


def test_simulated_conditioner_shifts_edges_only_when_asked_and_replays_older_draws():
    from training.simulated_conditioner import SimulatedConditioner

    depth = np.full((64, 64), 4.0, np.float32)
    depth[20:44, 20:44] = 1.0
    valid = np.ones_like(depth, bool)
    plain = dict(sigma_min=0.0, sigma_max=0.0, warp=0.0, gamma_min=1, gamma_max=1, thin=0.0)
    same = SimulatedConditioner(**plain).degrade(depth, valid, np.random.default_rng(3))
    np.testing.assert_allclose(same, 1.0 / depth)  # nothing asked, nothing moved
    off = SimulatedConditioner(sigma_min=0.01, sigma_max=0.03).degrade(depth, valid, np.random.default_rng(4))
    zero = SimulatedConditioner(sigma_min=0.01, sigma_max=0.03, shift=0.0).degrade(depth, valid, np.random.default_rng(4))
    np.testing.assert_array_equal(off, zero)  # shift = 0 draws nothing: the recipes before it replay exactly
    moved = SimulatedConditioner(**plain, shift=1.0, shift_max=0.05)  # radius 1..3 px at 64 px
    sizes = set()
    for seed in range(40):
        out = moved.degrade(depth, valid, np.random.default_rng(seed))
        side = int((out[32] == 1.0).sum())  # the square's width along its middle row
        assert side != 24 and abs(side - 24) <= 6
        sizes.add(side)
    assert min(sizes) < 24 < max(sizes)  # both fatter and thinner drawn
    with pytest.raises(ValueError, match="shift"):
        SimulatedConditioner(shift=1.5)
