"""Reading input images and precomputed depth maps into numpy.

``read_image(path)`` -> float32 (H,W,3) RGB in [0,1]:

- jpg/jpeg, webp, bmp: decoded by Pillow; EXIF orientation applied
  (``ImageOps.exif_transpose``); palette, CMYK, grey and alpha converted to RGB.
- png, tif/tiff: decoded by OpenCV with ``IMREAD_UNCHANGED`` so 16-bit files keep
  their 16 bits (divided by 65535); the EXIF orientation tag (read with Pillow) is
  applied with the same eight transforms. Files OpenCV cannot decode go through Pillow.
- exr, and 32-bit float TIFF: taken as scene-linear RGB, converted with the sRGB
  transfer function to display values and clipped to [0,1] (negative, NaN and
  values above 1 are clipped; there is no tone mapping).
- Grey images are replicated to 3 channels; alpha is dropped (not composited).
- The header's size is read before anything is decoded: images above the pixel
  limit (:data:`DEFAULT_PIXEL_LIMIT`, 150 MP, enough for a 15000 x 10000 plate;
  ``read_image(path, max_pixels=N)``, ``$BETTERDEPTH_MAX_PIXELS`` or the CLI's
  ``--max-pixels``) are refused as decompression bombs without allocating them.

The file's content decides the decoder (a PNG saved as ``.jpg`` still loads);
the extension must be one of :data:`IMAGE_EXTENSIONS`.

Every failure raises ``InputDataError("<path>: <one reason>")`` (a missing file:
``NoInputError``): unsupported extension, not a file, permission denied, empty
file, not an image, corrupt or truncated data, unsupported pixel format, smaller
than 2 x 2 pixels.

``read_depth_map(path)`` -> (values float32 (H,W), valid bool (H,W)) for
png (8/16-bit, raw values; our own png16 with its sidecar is decoded), npy, npz,
exr (``Z`` channel or the first), pfm and tif/tiff. Non-finite and zero pixels
are invalid and hold 0.

The bytes-level readers (``decode_rgb``, ``decode_raster``, ``decode_uint16_map``,
``decode_pfm``, ``load_npy``) take a file's bytes and a name for errors, so the
evaluation datasets read tar members with them and the training datasets
decode files the same way.
"""

from __future__ import annotations

import contextlib
import os
import struct
from pathlib import Path

import numpy as np

from betterdepth_cli.core.pixels import pil_pixels, unit_range
from betterdepth_cli.core.types import MIN_SIDE, InputDataError, UsageError
from betterdepth_cli.io.files import check_extension, read_head

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "tif", "tiff", "exr", "webp", "bmp")
MAX_IMAGE_PIXELS = 1 << 30  # ~1.07 gigapixels: Pillow's own bomb guard (the header check below comes first)
DEFAULT_PIXEL_LIMIT = 150_000_000  # refuse larger images from their header (decompression bombs)
PIXEL_LIMIT_ENV = "BETTERDEPTH_MAX_PIXELS"

_SIGNATURES = {
    "jpeg": (b"\xff\xd8\xff",),
    "png": (b"\x89PNG\r\n\x1a\n",),
    "tiff": (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"),
    "exr": (b"v/1\x01",),
    "bmp": (b"BM",),
}
_CV2_FIRST = ("png", "tiff")  # keep 16-bit and float samples


# --------------------------------------------------------------------------- checks


def sniff_format(head: bytes) -> str | None:
    """The image format from the first bytes of a file, or None when unrecognised."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    for fmt, sigs in _SIGNATURES.items():
        if any(head.startswith(sig) for sig in sigs):
            return fmt
    return None


def check_size(path: Path, arr: np.ndarray) -> np.ndarray:
    h, w = arr.shape[:2]
    if h < MIN_SIDE or w < MIN_SIDE:
        raise InputDataError(f"{path}: image is {w} x {h} pixels, at least {MIN_SIDE} x {MIN_SIDE} needed")
    return arr


# --------------------------------------------------------------------------- pixel conversions


def srgb_from_linear(x: np.ndarray) -> np.ndarray:
    """sRGB transfer function (IEC 61966-2-1) on linear values, clipped to [0,1] first. float32 in/out."""
    x = np.clip(np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0).astype(np.float32, copy=False)
    low = x * np.float32(12.92)
    high = np.float32(1.055) * np.power(x, np.float32(1 / 2.4)) - np.float32(0.055)
    return np.where(x <= 0.0031308, low, high).astype(np.float32)


def to_float_rgb(arr: np.ndarray, path: Path | str, linear_float: bool = True) -> np.ndarray:
    """(H,W), (H,W,1..4) RGB(A) uint8/uint16/float -> float32 (H,W,3) in [0,1].

    Grey is replicated, a 2nd (grey+alpha) or 4th (alpha) channel dropped.
    Float input is scene-linear when ``linear_float`` (converted to sRGB), else clipped.
    """
    if arr.ndim == 3 and arr.shape[2] in (1, 2):
        arr = arr[..., 0]
    elif arr.ndim == 3 and arr.shape[2] >= 3:
        arr = arr[..., :3]
    elif arr.ndim != 2:
        raise InputDataError(f"{path}: unsupported image shape {arr.shape}")
    grey = arr.ndim == 2
    src = arr[..., None] if grey else arr
    out = np.empty((arr.shape[0], arr.shape[1], 3), np.float32)
    if arr.dtype in (np.uint8, np.uint16):
        unit_range(src, out=out)
    elif arr.dtype in (np.float16, np.float32, np.float64):
        out[...] = src
        out = srgb_from_linear(out) if linear_float else np.clip(np.nan_to_num(out), 0.0, 1.0)
    else:
        raise InputDataError(f"{path}: unsupported pixel format {arr.dtype} (expected 8/16-bit or float)")
    return out


def apply_orientation(arr: np.ndarray, orientation: int | None) -> np.ndarray:
    """Apply an EXIF orientation (1..8) to (H,W[,C]), as ``ImageOps.exif_transpose`` does."""
    ops = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: np.swapaxes(a, 0, 1),
        6: lambda a: np.swapaxes(a, 0, 1)[:, ::-1],
        7: lambda a: np.swapaxes(a, 0, 1)[::-1, ::-1],
        8: lambda a: np.swapaxes(a, 0, 1)[::-1],
    }
    op = ops.get(int(orientation or 1))
    return np.ascontiguousarray(op(arr)) if op else arr


# --------------------------------------------------------------------------- decoders


def _pil():
    from PIL import Image

    if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    return Image


@contextlib.contextmanager
def _quiet_cv2():
    """Silence OpenCV's stderr warnings (e.g. 'PNG input buffer is incomplete') while decoding."""
    import cv2

    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    try:
        yield cv2
    finally:
        cv2.utils.logging.setLogLevel(level)


def _imdecode(data) -> np.ndarray | None:
    """cv2 IMREAD_UNCHANGED of encoded bytes: the stored samples in OpenCV's BGR(A) order; None when cv2 cannot."""
    if not len(data):
        return None
    with _quiet_cv2() as cv2:
        try:
            return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        except cv2.error:  # e.g. a header beyond OpenCV's own size limit: Pillow gives the reason
            return None


def bgr_to_rgb(arr: np.ndarray) -> np.ndarray:
    """(H,W,C>=3) BGR(A) as OpenCV decodes it -> RGB(A); grey (H,W) is returned as is."""
    if arr.ndim == 3 and arr.shape[2] >= 3:
        arr = arr[..., [2, 1, 0] + list(range(3, arr.shape[2]))]
    return arr


def cv2_decode(path: Path) -> np.ndarray | None:
    """Decode with cv2 IMREAD_UNCHANGED (BGR(A) reordered to RGB(A)); None when cv2 cannot."""
    arr = _imdecode(np.fromfile(str(path), dtype=np.uint8))
    return None if arr is None else bgr_to_rgb(arr)


def _png_exif(path: Path) -> bytes | None:
    """The raw ``eXIf`` chunk of a PNG, found by skipping over the other chunks (no decoding)."""
    with open(path, "rb") as f:
        f.seek(8)
        while True:
            header = f.read(8)
            if len(header) < 8:
                return None
            length, ctype = struct.unpack(">I4s", header)
            if ctype == b"eXIf":
                return f.read(length)
            if ctype == b"IEND":
                return None
            f.seek(length + 4, os.SEEK_CUR)  # data + CRC


def _exif_orientation(path: Path, fmt: str) -> int:
    """The EXIF orientation tag (1 when absent or unreadable), without decoding pixels.

    Pillow's ``PngImageFile.getexif`` decodes the whole image to find a late
    ``eXIf`` chunk, so PNG chunks are scanned here instead.
    """
    Image = _pil()
    try:
        if fmt == "png":
            raw = _png_exif(path)
            if not raw:
                return 1
            exif = Image.Exif()
            exif.load(raw)
            return int(exif.get(0x0112, 1) or 1)
        with Image.open(path) as im:
            return int(im.getexif().get(0x0112, 1) or 1)
    except Exception:  # noqa: BLE001 - orientation is optional metadata
        return 1


def pil_decode(path: Path) -> np.ndarray:
    """Decode with Pillow, EXIF orientation applied."""
    from PIL import ImageOps, UnidentifiedImageError

    Image = _pil()
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            return pil_pixels(im)
    except UnidentifiedImageError as exc:
        raise InputDataError(f"{path}: corrupt image data (Pillow cannot identify it)") from exc
    except Image.DecompressionBombError as exc:
        raise InputDataError(f"{path}: image larger than {MAX_IMAGE_PIXELS} pixels") from exc
    except ValueError as exc:
        raise InputDataError(f"{path}: unsupported pixel format ({exc})") from exc
    except (OSError, SyntaxError) as exc:
        raise InputDataError(f"{path}: corrupt or truncated image data ({exc})") from exc


def _exr_rgb(path: Path) -> np.ndarray:
    """An EXR's R,G,B (or Y, or first) channels as float32 (H,W[,3]), linear."""
    import OpenEXR

    try:
        channels = OpenEXR.File(str(path), separate_channels=True).channels()
    except Exception as exc:  # noqa: BLE001 - OpenEXR raises RuntimeError/ValueError
        raise InputDataError(f"{path}: corrupt or truncated EXR data") from exc
    if not channels:
        raise InputDataError(f"{path}: EXR has no channels")
    if all(c in channels for c in "RGB"):
        return np.stack([np.asarray(channels[c].pixels, np.float32) for c in "RGB"], axis=-1)
    name = "Y" if "Y" in channels else next(iter(channels))
    return np.asarray(channels[name].pixels, np.float32)


def pixel_limit(max_pixels: int | None = None) -> int:
    """The pixel limit in force: ``max_pixels``, else ``$BETTERDEPTH_MAX_PIXELS``, else the default."""
    if max_pixels is not None:
        return int(max_pixels)
    text = os.environ.get(PIXEL_LIMIT_ENV, "").strip()
    if text:
        try:
            value = int(float(text))
        except ValueError:
            raise UsageError(f"${PIXEL_LIMIT_ENV}={text!r}: expected a number of pixels") from None
        if value <= 0:
            raise UsageError(f"${PIXEL_LIMIT_ENV}={text!r}: expected a positive number of pixels")
        return value
    return DEFAULT_PIXEL_LIMIT


#: The bytes of a PNG's start that hold its IHDR through the colour type (signature 8, chunk length and
#: type 8, width and height 8, bit depth 1, colour type 1).
PNG_IHDR_BYTES = 26


def png_depth_and_colour(head: bytes) -> tuple[int, int] | None:
    """A PNG's (bit depth, colour type) from its first :data:`PNG_IHDR_BYTES` bytes; None when they
    are not a PNG's signature and IHDR."""
    if len(head) >= PNG_IHDR_BYTES and sniff_format(head) == "png" and head[12:16] == b"IHDR":
        return head[24], head[25]
    return None


def header_size(path: Path, fmt: str, head: bytes) -> tuple[int, int] | None:
    """(width, height) from the file's header without decoding pixels; None when the header cannot say.

    ``head``: the file's first 24 bytes (a PNG's size is in them)."""
    if fmt == "png":  # IHDR right after the signature: width, height as big-endian uint32
        if len(head) >= 24 and head[12:16] == b"IHDR":
            return struct.unpack(">II", head[16:24])
        return None
    Image = _pil()
    try:
        if fmt == "exr":
            import OpenEXR

            with OpenEXR.File(str(path), header_only=True) as f:
                (x0, y0), (x1, y1) = f.header()["dataWindow"]
            return int(x1 - x0 + 1), int(y1 - y0 + 1)
        with Image.open(path) as im:  # lazy: reads the header only
            return int(im.size[0]), int(im.size[1])
    except Image.DecompressionBombError:
        raise InputDataError(f"{path}: image header claims more than {MAX_IMAGE_PIXELS} pixels "
                             "(a decompression bomb)") from None
    except Exception:  # noqa: BLE001 - a header Pillow cannot read: the decoder gives the real error
        return None


def check_pixels(path: Path, width: int, height: int, max_pixels: int | None = None) -> None:
    """Refuse an image whose header claims more than the pixel limit (a decompression bomb)."""
    limit = pixel_limit(max_pixels)
    if width * height > limit:
        raise InputDataError(
            f"{path}: image is {width} x {height} pixels ({width * height / 1e6:.0f} MP), above the "
            f"{limit / 1e6:g} MP limit (raise it with --max-pixels or ${PIXEL_LIMIT_ENV})"
        )


def _format_and_size(path: Path) -> tuple[str, tuple[int, int] | None]:
    """An image file's format from its signature and its (width, height) from its header (None when the
    header cannot say); InputDataError for an unsupported extension or content that is no image."""
    check_extension(path, IMAGE_EXTENSIONS)
    head = read_head(path, 24)  # the signature, and a PNG's IHDR size
    fmt = sniff_format(head)
    if fmt is None:
        raise InputDataError(f"{path}: not an image (unrecognised file content)")
    return fmt, header_size(path, fmt, head)


def read_image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) of an image file as :func:`read_image` would return it (EXIF orientation
    applied), from its header where the header says, else by decoding it; InputDataError naming the
    file when it is not a readable image."""
    path = Path(path)
    fmt, size = _format_and_size(path)
    if size is None or min(size) < 1:
        h, w = read_image(path).shape[:2]
        return w, h
    return (size[1], size[0]) if _exif_orientation(path, fmt) in (5, 6, 7, 8) else size


def read_image(path: str | os.PathLike, max_pixels: int | None = None) -> np.ndarray:
    """Read an image as float32 (H,W,3) RGB in [0,1] (see the module docstring for the rules).

    ``max_pixels``: refuse larger images from their header (default :func:`pixel_limit`).
    """
    path = Path(path)
    fmt, size = _format_and_size(path)
    if size is not None:
        if min(size) < 1:
            raise InputDataError(f"{path}: corrupt image header ({size[0]} x {size[1]} pixels)")
        check_pixels(path, *size, max_pixels=max_pixels)
    try:
        if fmt == "exr":
            return check_size(path, to_float_rgb(_exr_rgb(path), path, linear_float=True))
        arr = cv2_decode(path) if fmt in _CV2_FIRST else None
        if arr is not None:
            arr = apply_orientation(arr, _exif_orientation(path, fmt))
        else:
            arr = pil_decode(path)
        return check_size(path, to_float_rgb(arr, path, linear_float=True))
    except MemoryError:
        raise InputDataError(f"{path}: not enough memory to decode this image") from None


# --------------------------------------------------------------------------- depth maps


# --------------------------------------------------------------------------- bytes-level readers
# Dataset files (members of a tar archive have no path) and the path readers above
# share these; each error names ``where`` (a path or ``archive.tar:member``).


def decode_raster(data: bytes, where: str) -> np.ndarray:
    """PNG/JPEG/TIFF/... bytes -> the stored samples as OpenCV decodes them unchanged.

    uint8/uint16/float, (H,W) or (H,W,C) in OpenCV's BGR(A) order; no EXIF
    orientation. InputDataError when OpenCV cannot decode them.
    """
    arr = _imdecode(data)
    if arr is None:
        raise InputDataError(f"{where}: cannot decode image (truncated or not an image)")
    return arr


def decode_rgb(data: bytes, where: str) -> np.ndarray:
    """Image bytes -> float32 (H,W,3) RGB in [0,1] (:func:`to_float_rgb`; float samples clipped, not linearised)."""
    return to_float_rgb(bgr_to_rgb(decode_raster(data, where)), where, linear_float=False)


def decode_uint16_map(data: bytes, where: str, what: str) -> np.ndarray:
    """A 16-bit PNG of ground-truth codes (``what`` says their meaning, for errors) -> uint16 (H,W).

    A colour file gives its first channel as OpenCV orders them.
    """
    arr = decode_raster(data, where)
    if arr.ndim == 3:
        arr = arr[:, :, 0]
    if arr.dtype != np.uint16:
        raise InputDataError(f"{where}: expected a 16-bit single-channel PNG ({what}), got {arr.dtype}")
    return arr


