"""``--conditioner file:`` with the files other tools write, in their exact layout and encoding (#23).

Each map holds a known pattern (a ramp with a distinct corner); the conditioner must return it in
place, in the right units, with the kind the tool's convention (or this tool's sidecar) says.
"""

from __future__ import annotations

import sys

import cv2
import numpy as np
import pytest
import torch

from betterdepth_cli.conditioner_registry import get_conditioner
from betterdepth_cli.core.types import InputDataError, UsageError

H, W = 6, 8


def _ramp(lo=0.0, hi=1.0) -> np.ndarray:
    """Values rising along rows and columns (no symmetry: a flip or shift shows)."""
    y, x = np.mgrid[0:H, 0:W].astype(np.float32)
    return (lo + (hi - lo) * (y * W + x) / (H * W - 1)).astype(np.float32)


def _predict(spec: str, key: str = "img_a"):
    cond = get_conditioner(spec)
    return cond, cond.predict(torch.rand(1, 3, H, W), keys=[key])


def _midas_write_pfm(path, image, scale=1):
    """MiDaS ``utils.write_pfm``: bottom row first, negative scale for little-endian."""
    with open(path, "wb") as file:
        image = np.flipud(image)
        file.write(b"Pf\n")
        file.write(b"%d %d\n" % (image.shape[1], image.shape[0]))
        endian = image.dtype.byteorder
        if endian == "<" or endian == "=" and sys.byteorder == "little":
            scale = -scale
        file.write(b"%f\n" % scale)
        image.tofile(file)


# ------------------------------------------------------------------ Marigold
@pytest.mark.parametrize("suffix", ["_depth", "_pred"])  # v1.1 and v1.0 names
def test_marigold_npy_in_depth_npy_is_relative_depth_and_zero_is_a_value(tmp_path, suffix):
    out = tmp_path / "marigold_out"
    for sub in ("depth_npy", "depth_bw", "depth_colored"):
        (out / sub).mkdir(parents=True)
    ramp = _ramp(0.0, 1.0)  # Marigold's affine-invariant depth in [0, 1]; 0 is the nearest point
    np.save(out / "depth_npy" / f"img_a{suffix}.npy", ramp)
    cv2.imwrite(str(out / "depth_bw" / f"img_a{suffix}.png"), (ramp * 65535.0).astype(np.uint16))
    cv2.imwrite(str(out / "depth_colored" / f"img_a{suffix}_colored.png"), np.zeros((H, W, 3), np.uint8) + 90)
    cond, pred = _predict(f"file:{out}")
    assert (pred.kind, pred.metric) == ("depth", False)
    np.testing.assert_array_equal(pred.values[0, 0].numpy(), ramp)
    assert pred.valid.all()  # the 0 at the nearest pixel is depth, not a hole
    assert cond.path_for("img_a").parent.name == "depth_npy"


def test_marigold_16bit_png_alone_is_scaled_back_to_0_1(tmp_path):
    (tmp_path / "depth_bw").mkdir()
    ramp = _ramp(0.0, 1.0)
    cv2.imwrite(str(tmp_path / "depth_bw" / "img_a_depth.png"), (ramp * 65535.0).astype(np.uint16))
    _, pred = _predict(f"file:{tmp_path}")
    np.testing.assert_allclose(pred.values[0, 0].numpy(), ramp, atol=1 / 65535)
    assert pred.kind == "depth" and pred.valid.all()


# ------------------------------------------------------------------ MiDaS
def test_midas_pfm_named_stem_dash_model_is_relative_disparity_top_row_first(tmp_path):
    disp = _ramp(5.0, 900.0)
    _midas_write_pfm(tmp_path / "img_a-dpt_beit_large_512.pfm", disp)
    cv2.imwrite(str(tmp_path / "img_a-dpt_beit_large_512.png"), np.zeros((H, W), np.uint16))  # its 16-bit preview
    cond, pred = _predict(f"file:{tmp_path}")
    assert cond.path_for("img_a").suffix == ".pfm"
    assert (pred.kind, pred.metric) == ("disparity", False)
    np.testing.assert_array_equal(pred.values[0, 0].numpy(), disp)


# ------------------------------------------------------------------ Depth Pro
def test_depth_pro_npz_in_a_mirrored_tree_is_metric_depth(tmp_path):
    (tmp_path / "sub").mkdir()
    depth = _ramp(0.7, 42.0)
    np.savez_compressed(tmp_path / "sub" / "img_a", depth=depth)  # depth-pro-run: <out>/<rel>/<stem>.npz
    cv2.imwrite(str(tmp_path / "sub" / "img_a.jpg"), np.zeros((H, W, 3), np.uint8))  # its colour preview
    cond = get_conditioner(f"file:{tmp_path}")
    pred = cond.predict(torch.rand(1, 3, H, W), keys=["sub/img_a"])
    assert (pred.kind, pred.metric) == ("depth", True)
    np.testing.assert_allclose(pred.values[0, 0].numpy(), depth, rtol=1e-6)


# ------------------------------------------------------------------ Depth Anything
def test_depth_anything_grey_8bit_png_keeps_zero_as_the_farthest_value(tmp_path):
    grey = np.round(_ramp(0.0, 255.0)).astype(np.uint8)  # run.py: min-max to 0..255, 0 = farthest
    cv2.imwrite(str(tmp_path / "img_a.png"), np.repeat(grey[..., None], 3, axis=-1))  # --grayscale: 3 equal channels
    with pytest.raises(UsageError, match="kind=disparity"):
        get_conditioner(f"file:{tmp_path}")  # an 8-bit PNG does not say what it holds
    _, pred = _predict(f"file:{tmp_path}?kind=disparity")
    np.testing.assert_array_equal(pred.values[0, 0].numpy(), grey.astype(np.float32))
    assert pred.valid.all() and pred.kind == "disparity"


def test_depth_anything_colour_output_is_refused_with_the_flag_to_use(tmp_path):
    colour = np.zeros((H, W, 3), np.uint8)
    colour[..., 0], colour[..., 2] = 200, 10
    cv2.imwrite(str(tmp_path / "img_a.png"), colour)
    with pytest.raises(InputDataError, match="--grayscale"):
        _predict(f"file:{tmp_path}?kind=disparity")


# ------------------------------------------------------------------ this tool's own outputs
def test_own_png16_and_exr_outputs_need_no_kind(tmp_path):
    from betterdepth_cli.io.depth_files import make_sidecar, write_exr, write_png16

    depth = _ramp(1.0, 9.0)
    (tmp_path / "png").mkdir()
    write_png16(tmp_path / "png" / "img_a.png", depth, meta=make_sidecar(kind="depth", metric=True))
    _, pred = _predict(f"file:{tmp_path / 'png'}")
    assert (pred.kind, pred.metric) == ("depth", True)
    np.testing.assert_allclose(pred.values[0, 0].numpy(), depth, atol=8.0 / 65535 + 1e-6)
    (tmp_path / "exr").mkdir()
    write_exr(tmp_path / "exr" / "img_a.exr", 1.0 / depth, kind="disparity", metric=False)
    _, pred = _predict(f"file:{tmp_path / 'exr'}")
    assert (pred.kind, pred.metric) == ("disparity", False)
    np.testing.assert_allclose(pred.values[0, 0].numpy(), 1.0 / depth, rtol=1e-6)


# ------------------------------------------------------------------ units, scale, invalid, pattern
def test_16bit_millimetres_become_metres_with_units_mm_and_zero_stays_a_hole(tmp_path):
    mm = np.round(_ramp(1120.0, 5000.0)).astype(np.uint16)  # NYU / ScanNet style
    mm[0, 0] = 0
    cv2.imwrite(str(tmp_path / "img_a.png"), mm)
    _, pred = _predict(f"file:{tmp_path}?kind=depth&units=mm")
    assert (pred.kind, pred.metric) == ("depth", True)
    np.testing.assert_allclose(pred.values[0, 0, 1:].numpy(), mm[1:].astype(np.float32) / 1000, rtol=1e-6)
    assert not pred.valid[0, 0, 0, 0] and pred.valid.sum() == H * W - 1
    # the same with scale= and metric=1; a sentinel of 65535 instead of 0 with invalid=
    _, scaled = _predict(f"file:{tmp_path}?kind=depth&scale=0.001&metric=1")
    torch.testing.assert_close(scaled.values, pred.values)
    mm[0, 0] = 65535
    cv2.imwrite(str(tmp_path / "img_a.png"), mm)
    _, sentinel = _predict(f"file:{tmp_path}?kind=depth&units=mm&invalid=65535")
    assert not sentinel.valid[0, 0, 0, 0] and sentinel.valid.sum() == H * W - 1


def test_pattern_finds_any_naming(tmp_path):
    (tmp_path / "preds").mkdir()
    np.save(tmp_path / "preds" / "img_a.disp.npy", _ramp(1, 2))
    np.save(tmp_path / "preds" / "img_b.disp.npy", _ramp(3, 4))
    cond, pred = _predict(f"file:{tmp_path}?kind=disparity&pattern=preds/{{stem}}.disp.npy", key="img_b")
    np.testing.assert_array_equal(pred.values[0, 0].numpy(), _ramp(3, 4))
    with pytest.raises(InputDataError, match="pattern preds/img_c.disp.npy"):
        cond.predict(torch.rand(1, 3, H, W), keys=["img_c"])


def test_bad_options_fail_in_one_line(tmp_path):
    np.save(tmp_path / "img_a.npy", _ramp())
    for spec, match in [("?kind=depth&unit=mm", "unknown option"), ("?kind=depth&units=inch", "units must be"),
                        ("?kind=depth&scale=abc", "must be a number"), ("?kind=depth&scale=-1", "positive"),
                        ("?kind=depth&metric=0&units=mm", "metric=0 and units=mm contradict")]:
        with pytest.raises(UsageError, match=match):
            get_conditioner(f"file:{tmp_path}{spec}")
    with pytest.raises(UsageError, match="file: needs the folder of the maps"):
        get_conditioner("file:?kind=depth")  # not the current folder, searched through


def test_holes_in_a_map_are_holes_in_every_output_format(tmp_path, tiny_model_dir):
    """A conditioning with invalid pixels (a metric map's zeros): the refined map holds no depth there in
    any format (NaN in EXR and NPY, code 0 in the PNG, read back as NaN), and the PNG's valid minimum
    is not taken for a hole."""
    from typer.testing import CliRunner

    from betterdepth_cli.cli.app import app
    from betterdepth_cli.io.depth_files import load_depth_output, read_png16

    photos, maps = tmp_path / "photos", tmp_path / "maps"
    photos.mkdir()
    maps.mkdir()
    h, w = H * 4, W * 4
    cv2.imwrite(str(photos / "img_a.png"), np.random.default_rng(1).integers(0, 255, (h, w, 3), np.uint8))
    depth = cv2.resize(_ramp(1.0, 4.0), (w, h), interpolation=cv2.INTER_LINEAR)
    hole = np.zeros((h, w), bool)
    hole[:6, :10] = True
    np.save(maps / "img_a.npy", np.where(hole, 0.0, depth).astype(np.float32))
    res = CliRunner().invoke(app, ["refine", str(photos), "--conditioner", f"file:{maps}?kind=depth&metric=1",
                                   "-o", str(tmp_path / "out"), "--model", str(tiny_model_dir),
                                   "--processing-res", "32", "-f", "png16,exr,npy"])
    assert res.exit_code == 0, res.output
    out = tmp_path / "out"
    for name in ("img_a.npy", "img_a.exr", "img_a.png"):
        values, _ = load_depth_output(out / name)
        np.testing.assert_array_equal(np.isnan(values), hole)
    codes = read_png16(out / "img_a.png")
    np.testing.assert_array_equal(codes == 0, hole)


# ------------------------------------------------------------------ the README's "coming from" commands
@pytest.mark.parametrize("tool", ["marigold", "depth-pro", "depth-anything"])
def test_refine_each_tools_existing_outputs_with_one_command(tmp_path, tiny_model_dir, tool):
    from typer.testing import CliRunner

    from betterdepth_cli.cli.app import app
    from betterdepth_cli.io.depth_files import load_depth_output

    photos, maps = tmp_path / "photos", tmp_path / "maps"
    photos.mkdir()
    cv2.imwrite(str(photos / "img_a.jpg"), np.random.default_rng(0).integers(0, 255, (H * 4, W * 4, 3), np.uint8))
    if tool == "marigold":  # python script/depth/run.py --input_rgb_dir photos --output_dir maps
        (maps / "depth_npy").mkdir(parents=True)
        np.save(maps / "depth_npy" / "img_a_depth.npy", _ramp(0.0, 1.0))
        spec, want = f"file:{maps}", ("depth", False)
    elif tool == "depth-pro":  # depth-pro-run -i photos -o maps
        maps.mkdir()
        np.savez_compressed(maps / "img_a", depth=_ramp(1.0, 30.0))
        spec, want = f"file:{maps}", ("depth", True)
    else:  # python run.py --img-path photos --outdir maps --pred-only --grayscale
        maps.mkdir()
        cv2.imwrite(str(maps / "img_a.png"), np.repeat(np.round(_ramp(0, 255)).astype(np.uint8)[..., None], 3, -1))
        spec, want = f"file:{maps}?kind=disparity", ("disparity", False)
    res = CliRunner().invoke(app, ["refine", str(photos), "--conditioner", spec, "-o", str(tmp_path / "out"),
                                   "--model", str(tiny_model_dir), "--processing-res", "32"])
    assert res.exit_code == 0, res.output
    values, meta = load_depth_output(tmp_path / "out" / "img_a.png")
    assert (meta["kind"], meta["metric"]) == want and values.shape == (H * 4, W * 4)
    assert meta["units"] == ("metres" if want[1] else "relative")


def test_maps_of_different_kinds_in_one_folder_are_refused_in_one_line(tmp_path):
    np.savez_compressed(tmp_path / "img_a", depth=_ramp(1.0, 9.0))  # Depth Pro: metric depth
    _midas_write_pfm(tmp_path / "img_b-midas_v21_small_256.pfm", _ramp(1.0, 2.0))  # MiDaS: disparity
    cond = get_conditioner(f"file:{tmp_path}")
    assert (cond.kind, cond.metric) == ("depth", True)
    with pytest.raises(InputDataError, match=r"img_b-midas_v21_small_256.pfm: holds disparity .*from MiDaS"):
        cond.predict(torch.rand(2, 3, H, W), keys=["img_a", "img_b"])


def test_maps_of_a_mirrored_tree_go_to_the_inputs_at_the_same_relative_path(tmp_path):
    """Inputs of one name in different folders (a mirrored tree, frames of several clips) each get the
    map at their relative path; a name that several map folders hold with none at the input's
    relative path is an error for that input, not a silent pick."""
    from typer.testing import CliRunner

    from betterdepth_cli.cli.app import app

    for sub, value in (("s1", 2.0), ("s2", 7.0)):
        (tmp_path / "tree" / sub).mkdir(parents=True)
        cv2.imwrite(str(tmp_path / "tree" / sub / "x.png"), np.full((H * 4, W * 4, 3), 100, np.uint8))
        for folder in (tmp_path / "mir" / sub, tmp_path / "pat" / "preds" / sub, tmp_path / "other" / f"o{sub}"):
            folder.mkdir(parents=True)
        np.save(tmp_path / "mir" / sub / "x.npy", np.full((H * 4, W * 4), value, np.float32))
        np.save(tmp_path / "pat" / "preds" / sub / "x_disp.npy", np.full((H * 4, W * 4), value, np.float32))
        np.save(tmp_path / "other" / f"o{sub}" / "x.npy", np.full((H * 4, W * 4), value, np.float32))

    def run(spec, out, *flags):
        return CliRunner().invoke(app, ["refine", str(tmp_path / "tree"), "-r", "-o", str(tmp_path / out), "-c", spec,
                                        "--no-refine", "-f", "npy", *flags])

    for spec, out in ((f"file:{tmp_path / 'mir'}?kind=disparity", "o1"),
                      (f"file:{tmp_path / 'pat'}?kind=disparity&pattern=preds/{{key}}_disp.npy", "o2")):
        res = run(spec, out)
        assert res.exit_code == 0, res.output
        assert [float(np.load(tmp_path / out / s / "x.npy").mean()) for s in ("s1", "s2")] == [2.0, 7.0]
    res = run(f"file:{tmp_path / 'other'}?kind=disparity", "o3", "--continue-on-error")
    assert res.exit_code == 65 and "maps named x in 2 folders (os1, os2) and none at s1/x" in res.output


def test_a_smaller_map_keeps_its_holes_to_themselves_and_another_aspect_is_refused(tmp_path):
    """A map at half the image's size is brought up over its valid pixels only: next to a hole the
    values stay those of the surface (no blend with the hole's zeros). A map of another aspect ratio
    is most likely another image's: that input fails (exit 65, alone under --continue-on-error)."""
    d = np.full((12, 16), 5.0, np.float32)
    d[:, :8] = 2.0
    d[4:8, 10:14] = 0.0  # a hole inside the 5 m half
    np.save(tmp_path / "img_a.npy", d)
    np.save(tmp_path / "img_b.npy", np.full((12, 48), 5.0, np.float32))
    cond = get_conditioner(f"file:{tmp_path}?kind=depth&metric=1")
    pred = cond.predict(torch.rand(1, 3, 24, 32), keys=["img_a"])
    values, valid = pred.values[0, 0].numpy(), pred.valid[0, 0].numpy()
    assert not valid[8:16, 20:28].any() and valid[:, 20:28].sum() == 24 * 8 - 64
    np.testing.assert_allclose(values[:, 18:][valid[:, 18:]], 5.0, rtol=1e-6)  # no blend with the hole's zeros
    with pytest.raises(InputDataError, match=r"img_b.npy: the map is 48 x 12 pixels, its image 32 x 24: "
                                             r"another aspect ratio"):
        cond.predict(torch.rand(1, 3, 24, 32), keys=["img_b"])


def test_one_map_that_does_not_say_what_it_holds_fails_alone(tmp_path):
    from typer.testing import CliRunner

    from betterdepth_cli.cli.app import app
    from betterdepth_cli.io.depth_files import make_sidecar, write_png16

    photos, maps = tmp_path / "photos", tmp_path / "maps"
    photos.mkdir()
    maps.mkdir()
    for name in ("a", "b", "c"):
        cv2.imwrite(str(photos / f"{name}.png"), np.full((H, W, 3), 90, np.uint8))
    for name in ("a", "c"):  # this tool's outputs say what they hold
        write_png16(maps / f"{name}.png", _ramp(1.0, 2.0), meta=make_sidecar(kind="disparity", metric=False))
    cv2.imwrite(str(maps / "b.png"), np.full((H, W), 3000, np.uint16))  # a bare 16-bit PNG says nothing
    res = CliRunner().invoke(app, ["refine", str(photos), "-o", str(tmp_path / "out"), "-c", f"file:{maps}",
                                   "--no-refine", "-f", "npy", "--continue-on-error"])
    assert res.exit_code == 3, res.output
    assert sorted(p.name for p in (tmp_path / "out").glob("*.npy")) == ["a.npy", "c.npy"]
    assert "b.png does not say what it holds" in res.output
