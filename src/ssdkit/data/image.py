"""Image decoding: any common file to ``Tensor[3, H, W]`` uint8 RGB, EXIF orientation applied.

Two decoders are used, chosen by the file's magic bytes (not its extension, so ``.JPG``, ``.jpeg`` or a PNG
saved as ``.jpg`` all work):

- JPEG and PNG go through ``torchvision.io.decode_image(mode=RGB, apply_exif_orientation=True)``.
  Measured on a 500x375 JPEG (quality 90), one thread, 200 decodes (torch 2.14 / torchvision 0.29 /
  Pillow 13, this 2-core machine): torchvision 1.95 ms per image, Pillow
  (``open`` + ``exif_transpose`` + ``convert("RGB")`` + ``torch.from_numpy``) 2.9 ms, pixel-identical.
  torchvision also gave identical pixels to Pillow for grayscale, CMYK and EXIF-rotated JPEGs and for
  RGBA, LA, palette and grayscale PNGs. For 16-bit PNGs it returns uint16, which is scaled to 8 bit here
  (``round(v * 255 / 65535)``); Pillow's ``convert`` would clip 16-bit gray to 255 instead.
- torchvision 0.29 deprecates its decoders (moving to TorchCodec) and warns on each call; that warning is
  silenced around the call, and if they disappear every file goes through Pillow (same pixels, ~1.5x slower).
- Everything else (BMP, TIFF, GIF, WebP, ...) goes through Pillow, which torchvision can't decode or
  (GIF) decodes to a frame stack.

Alpha is dropped, not composited (both decoders do this). Unreadable files raise
:class:`ssdkit.errors.DataError` naming the file.

Decompression bombs: a small file can declare a huge image (a 656 KB PNG of 6.6 GB of pixels). Every decode
first reads the size from the header and refuses images over ssdkit's own limit, whichever decoder runs:
:data:`DEFAULT_MAX_PIXELS` (178,956,970 pixels, where Pillow's default raises ``DecompressionBombError``: a
13,000 x 13,000 slide passes), or the ``SSDKIT_MAX_PIXELS`` environment variable. The limit is ssdkit's, not
Pillow's global ``Image.MAX_IMAGE_PIXELS``, because other libraries switch Pillow's off process-wide (importing
``sahi`` sets it to None); Pillow's own check stays as a second guard and is raised to match a larger
``SSDKIT_MAX_PIXELS``.
"""

from __future__ import annotations

import io
import os
import re
import warnings

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from ssdkit.errors import DataError, SSDKitError

try:
    from torchvision.io import ImageReadMode, decode_image
except ImportError:  # torchvision >= 0.29 deprecates its decoders; Pillow alone still handles every case
    decode_image = None

__all__ = ["DEFAULT_MAX_PIXELS", "IMAGE_EXTENSIONS", "check_complete", "image_size", "load_image", "max_pixels"]

#: Images with more pixels are refused unless ``SSDKIT_MAX_PIXELS`` says otherwise (Pillow's default error limit).
DEFAULT_MAX_PIXELS = 2 * 89_478_485

#: File extensions readers look for when an annotation only gives a stem (lower-case; matched case-insensitively).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# EXIF orientations 5..8 are rotations by 90/270 degrees: they swap width and height.
_SWAPPING_ORIENTATIONS = {5, 6, 7, 8}
# torchvision errors read "decode_jpeg, /long/build/path/decode_jpeg.cpp:171, Image is incomplete or truncated"
_TV_ERROR_PREFIX = re.compile(r"^.*?\.(?:cpp|h):\d+,\s*")


def load_image(path: str | os.PathLike) -> torch.Tensor:
    """Decode an image file.

    Args:
        path: image file (JPEG, PNG, BMP, TIFF, GIF, WebP; any extension case).

    Returns:
        ``Tensor[3, H, W]`` uint8, RGB, EXIF orientation applied (``H, W`` as :func:`image_size` reports).

    Raises:
        DataError: ``"<path>: cannot read image (<reason>)"`` when the file is missing, empty, truncated or
            not an image.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise DataError(f"{path}: cannot read image ({e.strerror or e})") from None
    if not data:
        raise DataError(f"{path}: cannot read image (empty file)")
    limit = max_pixels()  # before the header is read: it raises Pillow's own guard to a larger SSDKIT_MAX_PIXELS
    _check_pixels(path, *_header_size(path, io.BytesIO(data)), limit)
    if decode_image is not None and (data.startswith(_JPEG_MAGIC) or data.startswith(_PNG_MAGIC)):
        return _decode_torchvision(path, data)
    return _decode_pil(path)


def _header_size(path: str, source) -> tuple[int, int]:  # noqa: ANN001 - a path or a file object
    """(width, height) as stored (before EXIF rotation), from the header only."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(source) as im:
                return im.size
    except Image.DecompressionBombError as e:
        raise DataError(f"{path}: cannot read image ({e})") from None
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise DataError(f"{path}: cannot read image ({reason})") from None


def max_pixels() -> int:
    """The largest image (width x height) ssdkit decodes: ``SSDKIT_MAX_PIXELS`` if set, else the default.

    Raises:
        SSDKitError: ``SSDKIT_MAX_PIXELS`` is not a positive integer.
    """
    raw = os.environ.get("SSDKIT_MAX_PIXELS")
    if raw is None or not raw.strip():
        return DEFAULT_MAX_PIXELS
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise SSDKitError(f"SSDKIT_MAX_PIXELS: expected a positive integer (pixels), got {raw!r}")
    pil = Image.MAX_IMAGE_PIXELS
    if pil is not None and value > 2 * pil:  # Pillow errors above twice its limit: let the larger one through
        Image.MAX_IMAGE_PIXELS = (value + 1) // 2
    return value


def _check_pixels(path: str, width: int, height: int, limit: int) -> None:
    if width * height > limit:
        raise DataError(f"{path}: cannot read image ({width}x{height} = {width * height} pixels is over the "
                        f"decompression bomb limit of {limit}; set SSDKIT_MAX_PIXELS to read larger images)")


def _decode_torchvision(path: str, data: bytes) -> torch.Tensor:
    buf = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    try:
        with warnings.catch_warnings():
            # torchvision 0.29 warns on every decode (decoders moving to TorchCodec); they are still correct and
            # the fastest here, and the Pillow path takes over if they are removed.
            warnings.simplefilter("ignore", DeprecationWarning)
            img = decode_image(buf, mode=ImageReadMode.RGB, apply_exif_orientation=True)
    except RuntimeError as e:
        reason = _TV_ERROR_PREFIX.sub("", str(e).splitlines()[0]).strip()
        raise DataError(f"{path}: cannot read image ({reason})") from None
    if img.dtype == torch.uint16:
        img = _to_uint8_from_16bit(img)
    return img


def _to_uint8_from_16bit(img: torch.Tensor) -> torch.Tensor:
    # Rounded rescale so 65535 -> 255 and 257*k -> k exactly; a plain >> 8 would bias everything down.
    return ((img.to(torch.int32) * 255 + 32767) // 65535).to(torch.uint8)


def _decode_pil(path: str) -> torch.Tensor:
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
                # 16-bit gray: Pillow's convert("L"/"RGB") clips at 255 instead of scaling.
                arr = np.asarray(im, dtype=np.int64).clip(0, 65535)
                gray = torch.from_numpy(arr)
                return _to_uint8_from_16bit(gray).unsqueeze(0).expand(3, -1, -1).contiguous()
            if im.mode != "RGB":
                im = im.convert("RGB")
            arr = np.array(im, dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError, SyntaxError) as e:
        raise DataError(f"{path}: cannot read image ({e})") from None
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """Image size from the file header only (no pixel decode).

    Returns:
        ``(width, height)`` after EXIF orientation, i.e. the size :func:`load_image` returns.

    Raises:
        DataError: the file is missing or not a readable image.
    """
    path = os.fspath(path)
    limit = max_pixels()  # before the header is read: it raises Pillow's own guard to a larger SSDKIT_MAX_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                width, height = im.size
                orientation = _exif_orientation(im)
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError, SyntaxError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise DataError(f"{path}: cannot read image ({reason})") from None
    _check_pixels(path, width, height, limit)
    if orientation in _SWAPPING_ORIENTATIONS:
        width, height = height, width
    return width, height


def check_complete(path: str | os.PathLike) -> None:
    """Raise :class:`DataError` when a JPEG or PNG file is cut short (no end-of-image marker / ``IEND`` chunk in
    its last bytes): a truncated upload decodes to a partly grey image without complaint from some decoders."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            f.seek(max(0, os.fstat(f.fileno()).st_size - 4096))
            tail = f.read()
    except OSError as e:
        raise DataError(f"{path}: cannot read image ({e.strerror or e})") from None
    if head.startswith(_JPEG_MAGIC) and b"\xff\xd9" not in tail:
        raise DataError(f"{path}: cannot read image (truncated JPEG: no end-of-image marker)")
    if head.startswith(_PNG_MAGIC) and b"IEND" not in tail:
        raise DataError(f"{path}: cannot read image (truncated PNG: no IEND chunk)")


def _exif_orientation(im: Image.Image) -> int:
    try:
        if im.format == "PNG":
            # PngImageFile.getexif() would decode the whole image to reach an eXIf chunk after IDAT;
            # torchvision (libpng read_info) only sees chunks before IDAT too, so this matches load_image.
            raw = im.info.get("exif")
            if not raw:
                return 1
            exif = Image.Exif()
            exif.load(raw)
        else:
            exif = im.getexif()
        return int(exif.get(0x0112, 1) or 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not make a readable image unreadable
        return 1
