"""Reading images and depth maps (betterdepth_cli.io.images) on fabricated files."""

from __future__ import annotations

import os
import time

import cv2
import numpy as np
import pytest

from betterdepth_cli.core.types import InputDataError, NoInputError
from betterdepth_cli.io.images import apply_orientation, decode_rgb, decode_uint16_map, read_image, srgb_from_linear
from betterdepth_cli.io.depth_files import decode_pfm, read_depth_map, read_pfm


def _halves(h: int = 16, w: int = 32) -> np.ndarray:
    """uint8 RGB (h,w,3): left half red, right half blue."""
    img = np.zeros((h, w, 3), np.uint8)
    img[:, : w // 2, 0] = 255
    img[:, w // 2 :, 2] = 255
    return img


def _exif(orientation: int):
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


def _write_cv2(path, arr):
    import cv2

    assert cv2.imwrite(str(path), arr)
    return path


# --------------------------------------------------------------------------- read_image: formats


def test_exif_rotated_jpeg_is_upright(tmp_path):
    from PIL import Image

    path = tmp_path / "rot.jpg"
    Image.fromarray(_halves()).save(path, quality=95, exif=_exif(6))  # 6: rotate 90 degrees clockwise
    img = read_image(path)
    assert img.dtype == np.float32 and img.shape == (32, 16, 3)
    # clockwise rotation puts the stored left (red) half on top
    assert img[2, 8, 0] > 0.9 and img[2, 8, 2] < 0.1
    assert img[-3, 8, 2] > 0.9 and img[-3, 8, 0] < 0.1


@pytest.mark.parametrize("orientation", range(1, 9))
def test_png_orientation_matches_pillow_exif_transpose(tmp_path, orientation):
    from PIL import Image, ImageOps

    rng = np.random.default_rng(orientation)
    arr = rng.integers(0, 256, (3, 5, 3), dtype=np.uint8)
    path = tmp_path / "o.png"
    Image.fromarray(arr).save(path, exif=_exif(orientation))
    with Image.open(path) as im:
        expected = np.asarray(ImageOps.exif_transpose(im).convert("RGB"), np.float32) / 255
    np.testing.assert_allclose(read_image(path), expected, atol=1e-7)


def test_apply_orientation_identity_and_swap():
    a = np.arange(6).reshape(2, 3)
    assert apply_orientation(a, 1) is a and apply_orientation(a, None) is a
    assert apply_orientation(a, 6).tolist() == [[3, 0], [4, 1], [5, 2]]


def test_16_bit_png_keeps_16_bits(tmp_path):
    codes = np.array([[0, 1, 2], [65533, 65534, 65535]], np.uint16)
    img = read_image(_write_cv2(tmp_path / "g16.png", codes))
    assert img.shape == (2, 3, 3)
    np.testing.assert_allclose(img[..., 0], codes / 65535.0, rtol=0, atol=1e-7)
    assert img[0, 1, 0] != img[0, 0, 0]  # one 16-bit step apart, not collapsed to 8 bits


def test_16_bit_rgb_png_channel_order(tmp_path):
    bgr = np.zeros((2, 2, 3), np.uint16)
    bgr[..., 2] = 60000  # red in OpenCV's BGR order
    bgr[..., 0] = 1000  # blue
    img = read_image(_write_cv2(tmp_path / "c16.png", bgr))
    np.testing.assert_allclose(img[0, 0], [60000 / 65535, 0, 1000 / 65535], atol=1e-7)


def test_greyscale_is_replicated(tmp_path):
    from PIL import Image

    grey = np.array([[0, 100], [200, 255]], np.uint8)
    Image.fromarray(grey, "L").save(tmp_path / "g.png")
    img = read_image(tmp_path / "g.png")
    assert img.shape == (2, 2, 3)
    for c in range(3):
        np.testing.assert_allclose(img[..., c], grey / 255.0, atol=1e-7)


def test_rgba_alpha_is_dropped(tmp_path):
    from PIL import Image

    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2], rgba[..., 3] = 10, 20, 30, 0  # fully transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    np.testing.assert_allclose(read_image(tmp_path / "a.png")[1, 1], np.array([10, 20, 30]) / 255.0, atol=1e-7)


@pytest.mark.parametrize("ext", ["webp", "bmp", "tiff"])
def test_lossless_formats_round_trip(tmp_path, ext):
    from PIL import Image

    arr = np.random.default_rng(0).integers(0, 256, (4, 6, 3), dtype=np.uint8)
    path = tmp_path / f"x.{ext}"
    Image.fromarray(arr).save(path, **({"lossless": True} if ext == "webp" else {}))
    np.testing.assert_allclose(read_image(path), arr / 255.0, atol=1e-7)


def test_content_decides_decoder(tmp_path):
    from PIL import Image

    Image.fromarray(_halves(4, 4)).save(tmp_path / "really_png.jpg", format="PNG")
    assert read_image(tmp_path / "really_png.jpg")[0, 0, 0] == 1.0


def test_exr_is_linear_converted_to_srgb_and_clipped(tmp_path):
    import OpenEXR

    lin = np.array([[0.18, 0.0031308], [2.0, -1.0]], np.float32)
    OpenEXR.File({"type": OpenEXR.scanlineimage}, {"R": lin, "G": lin, "B": np.zeros_like(lin)}).write(str(tmp_path / "l.exr"))
    img = read_image(tmp_path / "l.exr")
    # hand-computed sRGB: 1.055 * 0.18 ** (1 / 2.4) - 0.055 = 0.46135; 12.92 * 0.0031308 = 0.04045
    np.testing.assert_allclose(img[..., 0], [[0.46135, 0.04045], [1.0, 0.0]], atol=1e-4)
    assert np.all(img[..., 2] == 0.0)


def test_float_tiff_is_linear(tmp_path):
    import cv2

    arr = np.full((2, 2, 3), 0.5, np.float32)
    assert cv2.imwrite(str(tmp_path / "f.tif"), arr)
    np.testing.assert_allclose(read_image(tmp_path / "f.tif"), srgb_from_linear(arr), atol=1e-6)
    assert abs(float(srgb_from_linear(np.float32(0.5))) - 0.735357) < 1e-5


def test_very_large_image_loads(tmp_path):
    from PIL import Image

    path = tmp_path / "plate.jpg"
    Image.new("L", (12000, 8000), 128).save(path, quality=50)
    start = time.perf_counter()
    img = read_image(path)
    assert img.shape == (8000, 12000, 3) and img.dtype == np.float32
    assert abs(float(img[4000, 6000, 1]) - 128 / 255) < 2 / 255
    assert time.perf_counter() - start < 20


# --------------------------------------------------------------------------- read_image: failures


def test_missing_file_is_no_input(tmp_path):
    with pytest.raises(NoInputError, match="gone.jpg: no such file"):
        read_image(tmp_path / "gone.jpg")


def test_zero_byte_file(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(InputDataError, match=r"empty.png: empty file \(0 bytes\)"):
        read_image(tmp_path / "empty.png")


@pytest.mark.parametrize("ext", ["png", "jpg"])
def test_truncated_image(tmp_path, ext):
    from PIL import Image

    rng = np.random.default_rng(0)
    full = tmp_path / f"full.{ext}"
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(full)
    data = full.read_bytes()
    (tmp_path / f"cut.{ext}").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputDataError, match=rf"cut.{ext}: corrupt or truncated"):
        read_image(tmp_path / f"cut.{ext}")


def test_not_an_image(tmp_path):
    (tmp_path / "notes.jpg").write_text("these are not pixels")
    with pytest.raises(InputDataError, match=r"notes.jpg: not an image \(unrecognised file content\)"):
        read_image(tmp_path / "notes.jpg")


def test_unsupported_extension(tmp_path):
    (tmp_path / "anim.gif").write_bytes(b"GIF89a")
    with pytest.raises(InputDataError, match=r"anim.gif: unsupported extension '.gif' \(supported: jpg"):
        read_image(tmp_path / "anim.gif")


@pytest.mark.parametrize("size", [(1, 1), (5, 1)])
def test_too_small(tmp_path, size):
    from PIL import Image

    Image.new("RGB", size).save(tmp_path / "tiny.png")
    with pytest.raises(InputDataError, match=rf"tiny.png: image is {size[0]} x {size[1]} pixels, at least 2 x 2 needed"):
        read_image(tmp_path / "tiny.png")


def test_folder_is_not_a_file(tmp_path):
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(InputDataError, match="dir.png: not a file"):
        read_image(tmp_path / "dir.png")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can read any file")
def test_permission_denied(tmp_path):
    from PIL import Image

    path = tmp_path / "locked.png"
    Image.new("RGB", (2, 2)).save(path)
    path.chmod(0)
    try:
        with pytest.raises(InputDataError, match="locked.png: permission denied"):
            read_image(path)
    finally:
        path.chmod(0o644)


# --------------------------------------------------------------------------- read_depth_map


def test_depth_png16_raw_values_and_zero_invalid(tmp_path):
    mm = np.array([[0, 1500], [65535, 7]], np.uint16)
    values, valid = read_depth_map(_write_cv2(tmp_path / "d.png", mm))
    assert values.dtype == np.float32 and values.tolist() == [[0, 1500], [65535, 7]]
    assert valid.tolist() == [[False, True], [True, True]]


def test_depth_png16_with_betterdepth_sidecar_is_decoded(tmp_path):
    from betterdepth_cli.io.depth_files import make_sidecar, write_png16

    values = np.array([[1.0, 2.0], [3.0, 5.0]], np.float32)
    write_png16(tmp_path / "r.png", values, meta=make_sidecar(kind="disparity", metric=False))
    back, valid = read_depth_map(tmp_path / "r.png")
    np.testing.assert_allclose(back, values, atol=4 / 65535)
    assert valid.all()


def test_depth_grey_stored_as_rgb_is_accepted_but_colour_is_not(tmp_path):
    grey = np.dstack([np.full((2, 2), 9, np.uint8)] * 3)
    assert read_depth_map(_write_cv2(tmp_path / "g.png", grey))[0].tolist() == [[9, 9], [9, 9]]
    colour = grey.copy()
    colour[0, 0, 1] = 1
    with pytest.raises(InputDataError, match="c.png: colour image, expected a single-channel depth map"):
        read_depth_map(_write_cv2(tmp_path / "c.png", colour))


def test_depth_npy_nonfinite_is_invalid(tmp_path):
    arr = np.array([[1.5, np.nan], [np.inf, -2.0]], np.float64)
    np.save(tmp_path / "d.npy", arr[None])  # (1,H,W) is squeezed
    values, valid = read_depth_map(tmp_path / "d.npy")
    assert values.dtype == np.float32 and values.tolist() == [[1.5, 0.0], [0.0, -2.0]]
    assert valid.tolist() == [[True, False], [False, True]]


def test_depth_npz_picks_depth_key(tmp_path):
    np.savez(tmp_path / "d.npz", depth=np.full((2, 3), 4.0), other=np.zeros(5))
    assert read_depth_map(tmp_path / "d.npz")[0].tolist() == [[4.0] * 3] * 2
    np.savez(tmp_path / "e.npz", a=np.zeros((2, 2)), b=np.zeros((2, 2)))
    with pytest.raises(InputDataError, match="e.npz: .npz holds a, b"):
        read_depth_map(tmp_path / "e.npz")


def test_depth_exr_z_channel_or_first(tmp_path):
    import OpenEXR

    z = np.array([[1.0, 0.0], [2.5, 3.0]], np.float32)
    OpenEXR.File({"type": OpenEXR.scanlineimage}, {"Z": z}).write(str(tmp_path / "z.exr"))
    values, valid = read_depth_map(tmp_path / "z.exr")
    assert values.tolist() == z.tolist() and valid.tolist() == [[True, False], [True, True]]
    OpenEXR.File({"type": OpenEXR.scanlineimage}, {"disp": z * 2}).write(str(tmp_path / "o.exr"))
    assert read_depth_map(tmp_path / "o.exr")[0].tolist() == (z * 2).tolist()


def test_pfm_little_endian_grey_rows_bottom_to_top(tmp_path):
    top_first = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], np.float32)
    body = top_first[::-1].astype("<f4").tobytes()
    (tmp_path / "g.pfm").write_bytes(b"Pf\n3 2\n-1.0\n" + body)
    assert read_pfm(tmp_path / "g.pfm").tolist() == top_first.tolist()
    assert read_depth_map(tmp_path / "g.pfm")[0].tolist() == top_first.tolist()


def test_pfm_big_endian_colour(tmp_path):
    top_first = np.arange(12, dtype=np.float32).reshape(2, 2, 3)
    body = top_first[::-1].astype(">f4").tobytes()
    (tmp_path / "c.pfm").write_bytes(b"PF\n2 2\n1.0\n" + body)
    assert read_pfm(tmp_path / "c.pfm").tolist() == top_first.tolist()


def test_pfm_bad_header_and_truncation(tmp_path):
    (tmp_path / "bad.pfm").write_bytes(b"P6\n2 2\n255\n" + bytes(12))
    with pytest.raises(InputDataError, match="bad.pfm: not a PFM file"):
        read_pfm(tmp_path / "bad.pfm")
    (tmp_path / "cut.pfm").write_bytes(b"Pf\n2 2\n-1.0\n" + bytes(8))
    with pytest.raises(InputDataError, match=r"cut.pfm: truncated PFM data \(2 of 4 values\)"):
        read_pfm(tmp_path / "cut.pfm")


def test_decode_pfm_bytes_comments_split_size_and_partial_value():
    top_first = np.array([[1.5, -2.0], [0.25, 8.0]], np.float32)
    body = top_first[::-1].astype("<f4").tobytes()
    for header in (b"Pf\n2 2\n-1.0\n", b"Pf\n# made by hand\n2\n2\n-1.0\n"):
        assert decode_pfm(header + body, "m.tar:d.pfm").tolist() == top_first.tolist()
    with pytest.raises(InputDataError, match=r"m.tar:d.pfm: truncated PFM data \(3 of 4 values\)"):
        decode_pfm(b"Pf\n2 2\n-1.0\n" + body[:14], "m.tar:d.pfm")  # 3.5 values


def test_decode_uint16_map_and_rgb_from_bytes():
    import cv2

    codes = np.array([[0, 1000], [65535, 7]], np.uint16)
    png = cv2.imencode(".png", codes)[1].tobytes()
    assert decode_uint16_map(png, "a.tar:d.png", "mm").tolist() == codes.tolist()
    grey8 = cv2.imencode(".png", codes.astype(np.uint8))[1].tobytes()
    with pytest.raises(InputDataError, match=r"a.tar:g.png: expected a 16-bit single-channel PNG \(mm\), got uint8"):
        decode_uint16_map(grey8, "a.tar:g.png", "mm")
    bgr = np.array([[[0, 0, 255], [255, 0, 0]]] * 2, np.uint8)  # red, blue
    rgb = decode_rgb(cv2.imencode(".png", bgr)[1].tobytes(), "a.tar:c.png")
    assert rgb.dtype == np.float32 and rgb[0].tolist() == [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    with pytest.raises(InputDataError, match=r"a.tar:x.png: cannot decode image"):
        decode_rgb(b"\x89PNG\r\n\x1a\n junk", "a.tar:x.png")


def test_depth_float_tiff(tmp_path):
    import cv2

    arr = np.array([[0.25, 7.5], [0.0, 1e3]], np.float32)
    assert cv2.imwrite(str(tmp_path / "d.tif"), arr)
    values, valid = read_depth_map(tmp_path / "d.tif")
    assert values.tolist() == arr.tolist() and valid.tolist() == [[True, True], [False, True]]


def test_depth_unsupported_extension(tmp_path):
    (tmp_path / "d.jpg").write_bytes(b"\xff\xd8\xff")
    with pytest.raises(InputDataError, match=r"d.jpg: unsupported extension '.jpg' \(supported: png, npy"):
        read_depth_map(tmp_path / "d.jpg")


# --------------------------------------------------------------------------- real samples (skipped when absent)


def _real_dir():
    root = os.environ.get("BETTERDEPTH_REAL_DATA") or os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "real")
    if not os.path.isdir(root):
        pytest.skip("real sample data not available")
    return root


@pytest.mark.real_data
def test_real_nyu_image_and_millimetre_depth():
    root = _real_dir()
    img = read_image(os.path.join(root, "nyuv2", "image_0.png"))
    assert img.shape == (480, 640, 3) and 0.0 <= img.min() and img.max() <= 1.0
    values, valid = read_depth_map(os.path.join(root, "nyuv2", "depth_0.png"))
    assert values.shape == (480, 640) and valid.mean() > 0.9
    assert 100 < np.median(values[valid]) < 10000  # millimetres, as stored


@pytest.mark.real_data
def test_real_middlebury_disparity_zero_is_invalid():
    root = _real_dir()
    values, valid = read_depth_map(os.path.join(root, "middlebury2005", "Art", "disp1.png"))
    assert 0.5 < valid.mean() < 1.0  # 0 = unknown in this dataset
    assert np.all(values[~valid] == 0) and values.max() <= 255


def _png_claiming(path, width: int, height: int) -> None:
    """A small PNG file whose header claims width x height RGB pixels (a decompression bomb's header)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)  # far fewer rows than claimed
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


@pytest.mark.parametrize("side", [60000, 16000])
def test_decompression_bomb_is_refused_from_its_header(tmp_path, monkeypatch, side):
    from betterdepth_cli.io.images import PIXEL_LIMIT_ENV

    monkeypatch.delenv(PIXEL_LIMIT_ENV, raising=False)
    path = tmp_path / "bomb.png"
    _png_claiming(path, side, side)
    with pytest.raises(InputDataError, match=rf"bomb.png: image is {side} x {side} pixels .* above the 150 MP limit"):
        read_image(path)


def test_pixel_limit_can_be_raised_and_lowered(tmp_path, monkeypatch):
    from betterdepth_cli.io.images import PIXEL_LIMIT_ENV

    monkeypatch.delenv(PIXEL_LIMIT_ENV, raising=False)
    path = tmp_path / "small.png"
    cv2.imwrite(str(path), np.zeros((30, 40, 3), np.uint8))
    assert read_image(path).shape == (30, 40, 3)
    with pytest.raises(InputDataError, match="40 x 30 pixels .* above the 0.001 MP limit"):
        read_image(path, max_pixels=1000)
    monkeypatch.setenv(PIXEL_LIMIT_ENV, "1000")
    with pytest.raises(InputDataError, match="above the 0.001 MP limit"):
        read_image(path)
    # a raised limit lets a bomb's header through to the decoder, which fails on one line, not a traceback
    bomb = tmp_path / "bomb.png"
    _png_claiming(bomb, 60000, 60000)
    with pytest.raises(InputDataError, match="bomb.png: "):
        read_image(bomb, max_pixels=10**10)


def test_a_png_header_of_zero_pixels_is_one_clean_error(tmp_path):
    path = tmp_path / "zero.png"
    _png_claiming(path, 0, 0)
    with pytest.raises(InputDataError, match=r"zero.png: corrupt image header \(0 x 0 pixels\)"):
        read_image(path)
