"""Tiled refinement: the grid, the feather weights, the robust fit, region sampling, and the tiled
refine itself on a real (tiny) BetterDepth model that is the identity at initialisation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from betterdepth_cli.core.refiner import BetterDepthModel
from betterdepth_cli.core.tiled import refine_tiled, shrink_image
from betterdepth_cli.core.tiling import (
    axis_tiles,
    axis_weight_sum,
    axis_weights,
    parse_tile,
    robust_scale_shift,
    sample_region,
    tile_borders,
    tiling_for,
)
from betterdepth_cli.core.types import DepthPrediction


def test_axis_tiles_by_hand():
    # n = ceil((1000 - 32) / 224) = 5 tiles; the last starts at 744 (= 1000 - 256, a multiple of 8);
    # starts i * 744 / 4 = 0, 186, 372, 558, 744 rounded to multiples of 8
    assert axis_tiles(1000, 256, 32, 8) == [(0, 256), (184, 440), (368, 624), (560, 816), (744, 1000)]
    assert axis_tiles(200, 256, 32, 8) == [(0, 200)]  # one tile when the side fits
    # the last tile ends at the side and may be longer than the tile by under one multiple
    assert axis_tiles(1003, 256, 32, 8)[-1] == (744, 1003)
    assert tile_borders([(0, 256), (184, 440), (368, 500)], 500) == [184, 256, 368, 440]


def test_feather_weights_sum_to_one_and_vanish_at_inner_edges():
    tiles = axis_tiles(1000, 256, 32, 8)
    torch.testing.assert_close(axis_weight_sum(tiles, 1000), torch.ones(1000, dtype=torch.float64), rtol=0, atol=1e-12)
    w = axis_weights(tiles, 1)  # an inner tile: ramps at both ends, 72 px each (440 - 368)
    assert w[0] < 0.01 and w[-1] < 0.01 and bool((w[72:-72] == 1).all())
    assert axis_weights(tiles, 0)[0] == 1.0  # the plate's border is not feathered


def test_robust_fit_recovers_scale_and_shift_despite_outliers():
    g = torch.Generator().manual_seed(0)
    pred = torch.rand(1, 1, 64, 64, generator=g)
    target = 2.0 * pred + 3.0
    target[0, 0, :6] += 100.0  # ~10 % of the pixels disagree wildly (an edge the anchor lacks)
    s, b = robust_scale_shift(pred, target)
    assert s == pytest.approx(2.0, abs=1e-6) and b == pytest.approx(3.0, abs=1e-6)  # float32 target
    s, b = robust_scale_shift(torch.full((8, 8), 5.0), torch.full((8, 8), 7.0))  # a flat tile: offset only
    assert (s, b) == (1.0, 2.0)


@pytest.mark.parametrize("mode", ["bilinear", "bicubic", "nearest"])
def test_sample_region_is_the_crop_of_the_resized_map(mode):
    src = torch.rand(1, 1, 13, 17, generator=torch.Generator().manual_seed(1))
    full = (50, 70)
    # nearest: the pixel whose centre is nearest ("nearest-exact"; no ties at these sizes)
    want = F.interpolate(src, size=full, mode="nearest-exact") if mode == "nearest" else F.interpolate(
        src, size=full, mode=mode, align_corners=False)
    got = sample_region(src, full, (9, 41), (20, 70), mode)
    # bicubic: grid_sample replicates the border where interpolate clamps the taps: equal inside
    inner = (slice(None), slice(None), slice(2, -2), slice(2, -2)) if mode == "bicubic" else (Ellipsis,)
    torch.testing.assert_close(got[inner], want[..., 9:41, 20:70][inner], rtol=0, atol=1e-5)
    assert sample_region(want, full, (1, 3), (2, 5)).data_ptr() == want[..., 1:3, 2:5].data_ptr()  # a view


def test_tiling_for_follows_the_card_and_the_flags():
    card = {"max_processing_res": 1536, "tile_above": 1536, "tile": 1024, "tile_overlap": 128}
    assert tiling_for(4000, 6000, card, None, None, 0) == (1024, 128)
    assert tiling_for(1000, 1500, card, None, None, 0) is None  # under tile_above
    assert tiling_for(4000, 6000, card, None, None, 768) is None  # an explicit processing size wins
    assert tiling_for(4000, 6000, card, 0, None, 0) is None  # --tile 0
    assert tiling_for(1000, 1500, card, 512, 64, 768) == (512, 64)  # --tile forces it
    assert tiling_for(4000, 6000, {"max_processing_res": 768}, None, None, 0) == (768, 96)  # derived from the cap
    assert tiling_for(4000, 6000, {}, None, None, 0) is None  # no cap, no automatic tiling
    assert parse_tile("512:48") == (512, 48) and parse_tile("off") == (0, None)
    with pytest.raises(ValueError, match="overlap"):
        parse_tile("128:64")


def _identity_model(filter_: bool = False) -> BetterDepthModel:
    """A residual model whose output layer is zero: it returns its conditioning exactly (the codec is exact)."""
    spec = {"type": "guided", "radius": 0.05, "eps": 1e-3} if filter_ else None
    model = BetterDepthModel.tiny(seed=0, residual=True, conditioning_filter=spec)
    model.card["zero_noise"] = True
    return model


def test_tiled_refine_of_an_identity_model_returns_the_conditioning():
    h, w = 72, 136
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    plane = (1.0 + 0.01 * xx + 0.02 * yy)[None, None]
    pred = DepthPrediction(plane, torch.ones_like(plane, dtype=torch.bool), "disparity")
    image = (np.random.default_rng(0).random((h, w, 3)) * 255).astype(np.uint8)
    out = refine_tiled(image, model=_identity_model(), prediction=pred, tile=48, overlap=16, anchor_res=40)
    assert out.refined.shape == (1, 1, h, w) and bool(out.valid.all())
    assert out.conditioning.shape[-1] == 40  # the anchor's conditioning, not a plate-size copy
    # every tile is conditioned on the anchor (the plane shrunk to 40 px and sampled back bilinearly:
    # the plane, exactly, away from the border); its fit to the anchor is scale 1, shift 0. At the
    # plate's border the upsampling clamps: the outer ~1.2 px (half an anchor pixel, 136 / 40 = 3.4 px)
    # hold the last anchor pixel's value, off by up to 0.01 x 1.2 + 0.02 x 1.2 (+ the shrink's own
    # border error) at a corner
    inner = (..., slice(12, -12), slice(12, -12))
    torch.testing.assert_close(out.refined[inner], plane[inner], rtol=0, atol=1e-3)
    torch.testing.assert_close(out.refined, plane, rtol=0, atol=5e-2)
    assert set(out.timings) >= {"anchor", "tiles", "total"}


def test_tiles_are_conditioned_on_the_anchor_not_on_the_full_size_conditioning():
    # a full-size conditioning = a plane + stripes of period 2 px (+-0.05). The anchor is the plate
    # shrunk by exactly 2 (antialiased: weights 1,3,3,1 / 8), which cancels the stripes and keeps the
    # plane; the tiles are conditioned on the anchor's refined map (the cascade), so an identity
    # model returns the plane, without the stripes (tiles on the raw conditioning would return them)
    h, w = 80, 160
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    plane = (1.0 + 0.01 * xx + 0.02 * yy)[None, None]
    stripes = 0.05 * (1 - 2 * (xx.long() % 2)).float()[None, None]
    pred = DepthPrediction(plane + stripes, torch.ones_like(plane, dtype=torch.bool), "disparity")
    image = (np.random.default_rng(1).random((h, w, 3)) * 255).astype(np.uint8)
    out = refine_tiled(image, model=_identity_model(), prediction=pred, tile=48, overlap=16, anchor_res=80)
    assert out.conditioning.shape[-2:] == (40, 80)
    inner = (..., slice(12, -12), slice(12, -12))
    torch.testing.assert_close(out.refined[inner], plane[inner], rtol=0, atol=1e-3)


def test_a_full_size_conditionings_holes_stay_exact_in_the_tiled_output():
    # the tiles take their values from the anchor but their validity from the conditioning at its own
    # resolution: a 7 x 11 px hole, not aligned to the anchor's 2 px pixels, comes back exactly
    h, w = 80, 160
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    plane = (1.0 + 0.01 * xx + 0.02 * yy)[None, None]
    valid = torch.ones_like(plane, dtype=torch.bool)
    valid[..., 31:38, 51:62] = False
    image = (np.random.default_rng(1).random((h, w, 3)) * 255).astype(np.uint8)
    out = refine_tiled(image, model=_identity_model(), prediction=DepthPrediction(plane, valid, "disparity"),
                       tile=48, overlap=16, anchor_res=80)
    assert torch.equal(out.valid, valid)
    inner = valid[..., 12:-12, 12:-12]
    torch.testing.assert_close(out.refined[..., 12:-12, 12:-12][inner], plane[..., 12:-12, 12:-12][inner],
                               rtol=0, atol=1e-3)


def test_shrinking_a_float_plate_with_saturated_white_stays_in_range():
    # OpenCV's area shrink of float32 ones by a non-integer factor gives values 1 ulp above 1, which
    # the image check refused: every `refine` of a large photo with blown-out white regions failed
    image = np.ones((2135, 3200, 3), np.float32)
    image[:, :1600] = 0.25
    small = shrink_image(image, (1025, 1536))
    assert small.shape == (1, 3, 1025, 1536) and float(small.max()) == 1.0
    assert abs(float(small.min()) - 0.25) < 1e-6


def test_tiled_refine_is_seamless_where_tiles_disagree_by_an_offset():
    # a guided-filter model: each tile filters with its own clipped windows, so tiles differ near their
    # edges; the fit and the feathering must leave no step where one tile hands over to the next
    h, w = 64, 160
    g = torch.Generator().manual_seed(2)
    image = torch.rand(1, 3, h, w, generator=g)
    xx = torch.arange(w, dtype=torch.float32)[None, None, None, :].expand(1, 1, h, w)
    pred = DepthPrediction(1.0 + xx / w, torch.ones(1, 1, h, w, dtype=torch.bool), "disparity")
    out = refine_tiled(image, model=_identity_model(True), prediction=pred, tile=64, overlap=24, anchor_res=80)
    cols = out.refined[0, 0].mean(0)  # the ramp averaged over rows
    steps = cols[1:] - cols[:-1]
    assert float(steps.min()) > 0  # still increasing everywhere: no tile border pulls it back
    assert float(steps.max()) < 4 * float(steps.median())  # and no jump at a hand-over


def _run_refine(root, tiny_dpt_dir, name: str, *flags: str) -> np.ndarray:
    """``refine`` of the tiled plate's folder with its model into ``root/name``: the NPY map."""
    from typer.testing import CliRunner

    from betterdepth_cli.cli.app import app

    res = CliRunner().invoke(app, ["refine", str(root / "in"), "-o", str(root / name), "--conditioner",
                                   f"hf:{tiny_dpt_dir}", "--model", str(root / "m"), "-f", "npy", "-q", *flags])
    assert res.exit_code == 0, res.output
    return np.load(root / name / "plate.npy")


@pytest.fixture(scope="module")
def tiled_plate(tmp_path_factory, tiny_dpt_dir):
    """A model whose card tiles above 64 px (tiles 64:16), a 160 x 96 plate in ``in/``, and refine's maps
    of it: automatic, ``--tile 64:16`` and ``--tile 0`` (in the folders of those names)."""
    import cv2

    root = tmp_path_factory.mktemp("tiled-plate")
    model = _identity_model(True)
    model.card["defaults"] = {**model.card.get("defaults", {}), "processing_res": 0, "max_processing_res": 64,
                              "tile_above": 64, "tile": 64, "tile_overlap": 16}
    model.save(root / "m")
    rng = np.random.default_rng(3)
    (root / "in").mkdir()
    assert cv2.imwrite(str(root / "in" / "plate.png"), (rng.random((96, 160, 3)) * 255).astype(np.uint8))
    maps = {"auto": _run_refine(root, tiny_dpt_dir, "auto"),
            "forced": _run_refine(root, tiny_dpt_dir, "forced", "--tile", "64:16"),
            "whole": _run_refine(root, tiny_dpt_dir, "whole", "--tile", "0")}
    return root, maps


def test_refine_tiles_above_the_cards_size_and_tile_flag(tiled_plate, tiny_dpt_dir):
    from typer.testing import CliRunner

    from betterdepth_cli.cli.app import app

    root, maps = tiled_plate
    auto, forced, whole = maps["auto"], maps["forced"], maps["whole"]

    def sidecar(name):  # how the plate was refined, as its sidecar says (automatic tiles too)
        return json.loads((root / name / "plate.json").read_text())

    assert [sidecar(n)["tiles"] for n in ("auto", "forced", "whole")] == [[64, 16], [64, 16], None]
    # the size the refiner ran at: the plate's in tiles, else capped by the card (96 x 64 / 160 = 38.4)
    assert (sidecar("auto")["refined_size"], sidecar("whole")["refined_size"]) == ([160, 96], [64, 38])
    assert auto.shape == whole.shape == (96, 160)
    np.testing.assert_array_equal(auto, forced)  # the card's tiles are the flag's
    assert not np.array_equal(auto, whole)  # 160 px > tile_above: tiled unless --tile 0
    res = CliRunner().invoke(app, ["refine", str(root / "in"), "-o", str(root / "x"), "--tile", "64:40"])
    assert res.exit_code == 64 and "overlap" in res.output
    # tiles work at the plate's pixel scale: a resolution beside them is not used, and the run says so
    res = CliRunner().invoke(app, ["refine", str(root / "in"), "-o", str(root / "x"), "--tile", "64:16",
                                   "--processing-res", "48", "-f", "npy", "--conditioner", f"hf:{tiny_dpt_dir}",
                                   "--model", str(root / "m")])
    assert res.exit_code == 0 and "processing resolution 48 is not used" in res.output
    np.testing.assert_array_equal(np.load(root / "x" / "plate.npy"), forced)
    assert sidecar("x")["processing_res"] == 0  # what ran
    rerun = CliRunner().invoke(app, ["refine", "--config", str(root / "x" / "betterdepth-run.toml")])
    assert rerun.exit_code == 0 and "1 skipped" in rerun.output  # its record reruns it
    assert _run_refine(root, tiny_dpt_dir, "low", "--tile", "0", "--processing-res", "48").shape == (96, 160)


def test_the_library_tiles_a_plate_as_refine_does(tiled_plate, tiny_dpt_dir):
    """The library decides as refine does and gives the same maps (the PNG opened with PIL)."""
    from PIL import Image

    from betterdepth_cli import BetterDepthPipeline
    from betterdepth_cli.core.types import UsageError

    root, maps = tiled_plate
    pipe = BetterDepthPipeline.from_pretrained(str(root / "m"), f"hf:{tiny_dpt_dir}")
    photo = Image.open(root / "in" / "plate.png")
    lib_auto = pipe(photo)
    np.testing.assert_array_equal(lib_auto.depth_np[0], maps["auto"])
    assert lib_auto.conditioning.shape == lib_auto.depth.shape == (1, 1, 96, 160)  # the anchor's, at input size
    assert "tile" not in lib_auto.settings  # the card decided, as in refine's sidecar
    assert lib_auto.routes == [{"cascade": False, "tiles": [64, 16], "refined_size": [160, 96]}]
    assert lib_auto.sidecar()["tiles"] == [64, 16]
    lib_whole = pipe(np.asarray(photo), tile=0)
    np.testing.assert_array_equal(lib_whole.depth_np[0], maps["whole"])
    assert lib_whole.settings["tile"] == 0
    two = pipe([photo, np.asarray(photo)], tile="64:16")  # a batch of plates: one by one, each as alone
    np.testing.assert_array_equal(two.depth_np[0], maps["forced"])
    np.testing.assert_array_equal(two.depth_np[1], maps["forced"])
    assert (two.settings["tile"], two.settings["tile_overlap"]) == (64, 16)
    with pytest.raises(UsageError, match="`tile` overlap"):
        pipe(photo, tile="64:40")
    with pytest.warns(UserWarning, match="processing resolution 48 is not used"):
        beside = pipe(photo, tile="64:16", processing_res=48)
    np.testing.assert_array_equal(beside.depth_np[0], maps["forced"])
    assert beside.settings["processing_res"] == 0


def test_eval_tiles_a_plate_as_refine_does(tiled_plate, tiny_dpt_dir, tmp_path):
    """eval refines a plate above tile_above in tiles too: its saved prediction is refine's map."""
    from typer.testing import CliRunner

    from betterdepth_cli.cli.app import app

    root, maps = tiled_plate
    data = tmp_path / "data"
    for sub in ("depth", "rgb"):
        (data / sub).mkdir(parents=True)
    (data / "rgb" / "plate.png").write_bytes((root / "in" / "plate.png").read_bytes())
    np.save(data / "depth" / "plate.npy", np.linspace(1.0, 3.0, 96 * 160, dtype=np.float32).reshape(96, 160))
    (data / "dataset.toml").write_text('images = "rgb"\nground_truth = "depth"\nkind = "depth"\nunits = "m"\n')
    res = CliRunner().invoke(app, ["eval", "--dataset", "folder", "--data-root", str(data), "--conditioner",
                                   f"hf:{tiny_dpt_dir}", "--model", str(root / "m"), "--save-predictions",
                                   str(tmp_path / "preds"), "--output", str(tmp_path / "r.json"), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    np.testing.assert_array_equal(np.load(tmp_path / "preds" / "refined" / "plate.npy"), maps["auto"])
    assert json.loads((tmp_path / "preds" / "refined" / "plate.json").read_text())["tiles"] == [64, 16]


def test_a_shot_of_plates_is_co_aligned_before_its_frames_are_tiled(tmp_path):
    """Frames above tile_above in a sequence: their anchors' conditionings are co-aligned with the shot,
    as smaller frames' are, so a conditioner whose scale and shift jump between frames gives one map."""
    import cv2
    from typer.testing import CliRunner

    from betterdepth_cli.cli.app import app

    model = _identity_model()
    model.card["defaults"] = {**model.card.get("defaults", {}), "processing_res": 0, "max_processing_res": 64,
                              "tile_above": 64, "tile": 64, "tile_overlap": 16}
    model.save(tmp_path / "m")
    rng = np.random.default_rng(4)
    seq, maps = tmp_path / "shot", tmp_path / "maps"
    seq.mkdir()
    maps.mkdir()
    img = (rng.random((96, 160, 3)) * 255).astype(np.uint8)
    yy, xx = np.mgrid[0:96, 0:160].astype(np.float32)
    base = 1.0 + xx / 160 + 0.5 * (yy > 48)
    for i, (a, c) in enumerate([(1.0, 0.0), (1.3, 0.2), (0.8, -0.1)]):
        assert cv2.imwrite(str(seq / f"frame.{i:04d}.png"), img)
        np.save(maps / f"frame.{i:04d}.npy", (a * base + c).astype(np.float32))

    def run(name, *flags):
        res = CliRunner().invoke(app, ["refine", str(seq / "frame.%04d.png"), "-o", str(tmp_path / name),
                                       "--conditioner", f"file:{maps}?kind=disparity", "--model", str(tmp_path / "m"),
                                       "-f", "npy", "-q", *flags])
        assert res.exit_code == 0, res.output
        return [np.load(tmp_path / name / f"frame.{i:04d}.npy") for i in range(3)]

    shot, apart = run("shot"), run("apart", "--per-frame")
    assert shot[0].shape == (96, 160)
    span = float(shot[0].max() - shot[0].min())
    for i in (1, 2):  # every frame in frame 0's units: the jump is gone
        np.testing.assert_allclose(shot[i], shot[0], rtol=0, atol=1e-4 * span)
    np.testing.assert_array_equal(apart[0], shot[0])  # the first frame defines the units
    assert float(np.abs(apart[1] - shot[0]).max()) > 0.1 * span  # per frame, the jump stays
    # core.shot.refine_shot (eval's temporal runner) tiles the same frames the same way
    from betterdepth_cli.conditioner_registry import get_conditioner
    from betterdepth_cli.core.refiner import load_model
    from betterdepth_cli.core.shot import refine_shot
    from betterdepth_cli.io.images import read_image

    frames = [(torch.from_numpy(read_image(seq / f"frame.{i:04d}.png")).permute(2, 0, 1), f"frame.{i:04d}")
              for i in range(3)]
    results = list(refine_shot(frames, conditioner=get_conditioner(f"file:{maps}?kind=disparity"),
                               model=load_model(str(tmp_path / "m"))))
    for i, res in enumerate(results):
        np.testing.assert_array_equal(res.refined[0, 0].numpy(), shot[i])
        assert res.conditioning.shape == res.refined.shape
