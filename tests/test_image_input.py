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
        as_image_list("photo.jpg")


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
