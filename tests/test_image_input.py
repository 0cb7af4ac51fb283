"""Library image inputs: every accepted form gives the same batch; ambiguous ones are refused."""

import numpy as np
import pytest
import torch
from PIL import Image

from betterdepth_cli.core.image_input import as_image_batch, as_image_list
from betterdepth_cli.core.pipeline import refine_batch
from betterdepth_cli.core.refiner import BetterDepthModel
from betterdepth_cli.core.types import DepthPrediction, UsageError

RGB8 = np.random.default_rng(0).integers(0, 256, (12, 16, 3), dtype=np.uint8)
WANT = torch.from_numpy(RGB8.astype(np.float32) / 255.0).permute(2, 0, 1)[None]


@pytest.mark.parametrize("make", [
    lambda: Image.fromarray(RGB8),
    lambda: RGB8,
    lambda: (RGB8.astype(np.uint16) * 257),
    lambda: RGB8.astype(np.float32) / 255.0,
    lambda: np.concatenate([RGB8, np.full((12, 16, 1), 7, np.uint8)], -1),  # RGBA: alpha dropped
    lambda: torch.from_numpy(RGB8).permute(2, 0, 1),  # uint8 tensor (3,H,W)
    lambda: WANT.clone(),
    lambda: [Image.fromarray(RGB8)],
])
def test_every_accepted_form_gives_the_same_batch(make):
    torch.testing.assert_close(as_image_batch(make()), WANT, rtol=0, atol=1e-6)


@pytest.mark.parametrize("make", [
    lambda: Image.fromarray(RGB8),
    lambda: RGB8,
    lambda: (RGB8.astype(np.uint16) * 257),
    lambda: RGB8.astype(np.float32) / 255.0,
    lambda: np.concatenate([RGB8, np.full((12, 16, 1), 7, np.uint8)], -1),
])
def test_the_plate_list_holds_float_rgb_as_refine_reads_files(make):
    (one,) = as_image_list(make())
    assert one.dtype == np.float32 and one.shape == (12, 16, 3)
    np.testing.assert_allclose(one, WANT[0].permute(1, 2, 0).numpy(), rtol=0, atol=1e-6)


def test_the_plate_list_keeps_tensors_and_splits_batches():
    two = as_image_list([WANT, torch.cat([WANT, WANT])])
    assert len(two) == 3 and all(t.shape == (1, 3, 12, 16) for t in two)
    with pytest.raises(UsageError, match="must have one size"):
        as_image_list([RGB8, RGB8[:8]])
    with pytest.raises(UsageError, match="unsupported image type str"):
        as_image_list("photo.jpg")  # the core takes no paths (it reads no files); the library reads them


def test_grey_and_lists():
    grey = RGB8[..., 0]
    out = as_image_batch(grey)
    assert out.shape == (1, 3, 12, 16) and torch.equal(out[:, 0], out[:, 2])
    assert as_image_batch([RGB8, Image.fromarray(RGB8)]).shape == (2, 3, 12, 16)


@pytest.mark.parametrize("bad,match", [
    (RGB8.astype(np.float32), r"float image values must be in \[0, 1\], got \[0, 255\] \(values up to 255"),
    (WANT * 255, r"must be in \[0, 1\]"),
    (RGB8.transpose(2, 0, 1).copy(), "numpy images are channels last"),
    (torch.from_numpy(RGB8), "tensors are channels first"),
    (RGB8.astype(np.int32), "unsupported numpy dtype int32"),
    ("photo.jpg", "unsupported image type str"),
    (np.zeros((0, 10, 3), np.uint8), r"the image is empty \(shape \(0, 10, 3\)\)"),
    (torch.zeros(3, 0, 4), r"the image is empty \(shape \(3, 0, 4\)\)"),
    (torch.zeros(12, 16, 3), r"got shape \(12, 16, 3\) \(tensors are channels first"),  # the shape as given
    ([RGB8, RGB8[:8]], "must have one size"),
])
def test_ambiguous_input_is_refused_with_what_to_pass(bad, match):
    with pytest.raises(UsageError, match=match):
        as_image_batch(bad)


def test_refine_batch_gives_the_same_map_for_uint8_float_and_pil():
    model = BetterDepthModel.tiny(seed=0)
    cond = torch.linspace(1, 2, 12 * 16).reshape(1, 1, 12, 16)
    pred = DepthPrediction(cond, torch.ones_like(cond, dtype=torch.bool), "disparity")
    outs = [refine_batch(x, prediction=pred, model=model, steps=1, processing_res=0,
                         generator=torch.Generator().manual_seed(0)).refined
            for x in (RGB8, Image.fromarray(RGB8), WANT, torch.from_numpy(RGB8).permute(2, 0, 1))]
    for o in outs[1:]:
        torch.testing.assert_close(o, outs[0], rtol=0, atol=1e-6)


def test_pil_images_keep_their_bit_depth_and_orientation(tmp_path):
    """A 16-bit or float PIL image is not clipped to 8 bits (convert("RGB") would make it white), and a
    photo's EXIF orientation is applied as refine applies it when it reads the file."""
    from PIL import ImageOps

    grey16 = np.array([[0, 1000, 40000], [65535, 12345, 7]], np.uint16)
    want16 = grey16.astype(np.float32) / 65535
    im16 = Image.fromarray(grey16)
    assert im16.mode.startswith("I;16")
    (one,) = as_image_list(im16)
    np.testing.assert_allclose(one, np.repeat(want16[..., None], 3, -1), rtol=0, atol=1e-7)
    floats = np.array([[0.0, 0.25], [0.5, 1.0]], np.float32)
    torch.testing.assert_close(as_image_batch(Image.fromarray(floats, mode="F"))[0, 0], torch.from_numpy(floats))
    with pytest.raises(UsageError, match=r"float image values must be in \[0, 1\]"):
        as_image_batch(Image.fromarray(floats * 300, mode="F"))

    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    Image.fromarray(RGB8).save(tmp_path / "rot.jpg", exif=exif, quality=100)
    with Image.open(tmp_path / "rot.jpg") as im:
        upright = np.asarray(ImageOps.exif_transpose(im)).astype(np.float32) / 255
        got = as_image_list(im)[0]
    assert got.shape == (16, 12, 3)  # 12 x 16 stored, shown 16 x 12
    np.testing.assert_allclose(got, upright, rtol=0, atol=1e-6)


def test_big_endian_pixels_are_read_as_their_values():
    be = (RGB8.astype(np.uint16) * 257).astype(">u2")
    torch.testing.assert_close(as_image_batch(be), WANT, rtol=0, atol=1e-6)
