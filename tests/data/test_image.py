"""load_image / image_size: every colour mode and quirk ends as Tensor[3, H, W] uint8 RGB, EXIF applied."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from ssdkit.data.image import image_size, load_image
from ssdkit.errors import DataError, SSDKitError


def _gradient(w: int = 48, h: int = 32) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // (w - 1), y * 255 // (h - 1), np.full_like(x, 90)], -1).astype(np.uint8)


def _write_png16_rgb(path, arr: np.ndarray) -> None:
    """Minimal 16-bit RGB PNG writer (Pillow cannot write one)."""
    h, w, _ = arr.shape
    raw = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in arr)

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )


def test_rgb_png_exact_and_layout(tmp_path):
    arr = _gradient()
    Image.fromarray(arr).save(tmp_path / "a.png")
    img = load_image(tmp_path / "a.png")
    assert img.dtype == torch.uint8 and img.shape == (3, 32, 48)
    assert torch.equal(img, torch.from_numpy(arr).permute(2, 0, 1))
    assert image_size(tmp_path / "a.png") == (48, 32)


@pytest.mark.parametrize("name", ["a.jpg", "b.JPG", "c.jpeg"])
def test_jpeg_any_extension_case(tmp_path, name):
    Image.new("RGB", (30, 20), (200, 30, 40)).save(tmp_path / name, format="JPEG", quality=95)
    img = load_image(tmp_path / name)
    assert img.shape == (3, 20, 30)
    assert (img[:, 10, 15].int() - torch.tensor([200, 30, 40])).abs().max() <= 3


def test_grayscale_jpeg_and_png_give_three_equal_channels(tmp_path):
    gray = _gradient()[..., 0]
    Image.fromarray(gray).save(tmp_path / "g.png")
    Image.fromarray(gray).save(tmp_path / "g.jpg", quality=95)
    png = load_image(tmp_path / "g.png")
    assert torch.equal(png, torch.from_numpy(gray).expand(3, -1, -1))
    jpg = load_image(tmp_path / "g.jpg")
    assert jpg.shape == (3, 32, 48) and torch.equal(jpg[0], jpg[1]) and torch.equal(jpg[1], jpg[2])


def test_rgba_drops_alpha_keeps_colour(tmp_path):
    arr = np.zeros((10, 12, 4), np.uint8)
    arr[..., 0], arr[..., 1], arr[..., 2], arr[..., 3] = 10, 20, 30, 0  # fully transparent
    Image.fromarray(arr, "RGBA").save(tmp_path / "a.png")
    img = load_image(tmp_path / "a.png")
    assert img.shape == (3, 10, 12)
    assert img[:, 5, 5].tolist() == [10, 20, 30]


def test_palette_png(tmp_path):
    im = Image.new("P", (8, 6))
    im.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 9))
    im.putpixel((2, 3), 1)
    im.putpixel((5, 1), 2)
    im.save(tmp_path / "p.png")
    img = load_image(tmp_path / "p.png")
    assert img[:, 3, 2].tolist() == [255, 0, 0]
    assert img[:, 1, 5].tolist() == [0, 0, 255]
    assert img[:, 0, 0].tolist() == [0, 0, 0]


def test_cmyk_jpeg_matches_pillow_conversion(tmp_path):
    Image.new("RGB", (16, 16), (40, 160, 220)).convert("CMYK").save(tmp_path / "c.jpg", quality=95)
    img = load_image(tmp_path / "c.jpg")
    with Image.open(tmp_path / "c.jpg") as im:
        assert im.mode == "CMYK"
        ref = torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1)
    assert img.shape == (3, 16, 16)
    assert (img.int() - ref.int()).abs().max() <= 2
    assert (img[:, 8, 8].int() - torch.tensor([40, 160, 220])).abs().max() <= 6


def test_16bit_gray_png_is_scaled_not_clipped(tmp_path):
    arr = np.array([[0, 257 * 100, 32768, 65535]], dtype=np.uint16)
    Image.fromarray(arr).save(tmp_path / "g16.png")
    img = load_image(tmp_path / "g16.png")
    assert img.dtype == torch.uint8 and img.shape == (3, 1, 4)
    assert img[0].tolist() == [[0, 100, 128, 255]]


def test_16bit_rgb_png(tmp_path):
    arr = np.array([[[65535, 0, 257 * 7], [257 * 200, 65535, 0]]], dtype=np.uint16)
    _write_png16_rgb(tmp_path / "c16.png", arr)
    img = load_image(tmp_path / "c16.png")
    assert img.permute(1, 2, 0).tolist() == [[[255, 0, 7], [200, 255, 0]]]


def test_16bit_gray_tiff_through_pillow_path(tmp_path):
    arr = np.array([[0, 257 * 50, 65535]], dtype=np.uint16)
    Image.fromarray(arr).save(tmp_path / "g16.tif")
    assert load_image(tmp_path / "g16.tif")[1].tolist() == [[0, 50, 255]]


def test_bmp_through_pillow_path(tmp_path):
    arr = _gradient()
    Image.fromarray(arr).save(tmp_path / "a.bmp")
    assert torch.equal(load_image(tmp_path / "a.bmp"), torch.from_numpy(arr).permute(2, 0, 1))


@pytest.mark.parametrize("ext", ["jpg", "png"])
def test_exif_rotation_applied_with_pixel_where_expected(tmp_path, ext):
    # Stored 40 wide x 20 high, red block in the stored top-left corner. Orientation 6 = "rotate 90 CW to
    # display": displayed 20 wide x 40 high, the stored top-left lands at the displayed top-right.
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:6, :6] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / f"r.{ext}"
    Image.fromarray(arr).save(path, exif=exif, **({"quality": 95} if ext == "jpg" else {}))
    img = load_image(path)
    assert img.shape == (3, 40, 20)
    assert image_size(path) == (20, 40)
    top_right, top_left, bottom_right = img[:, 2, 17].int(), img[:, 2, 2].int(), img[:, 37, 17].int()
    assert top_right[0] > 200 and top_right[1] < 50
    assert top_left.max() < 50 and bottom_right.max() < 50


def test_unreadable_files_raise_data_error_naming_file(tmp_path):
    Image.fromarray(_gradient(64, 64)).save(tmp_path / "ok.jpg")
    data = (tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "trunc.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "garbage.png").write_bytes(b"not an image at all" * 5)
    (tmp_path / "empty.jpg").write_bytes(b"")
    for name in ("trunc.jpg", "garbage.png", "empty.jpg", "missing.jpg"):
        with pytest.raises(DataError, match="cannot read image") as info:
            load_image(tmp_path / name)
        assert str(tmp_path / name) in str(info.value)
        assert ".cpp" not in str(info.value)  # torchvision's build paths are stripped
    for name in ("garbage.png", "empty.jpg", "missing.jpg"):
        with pytest.raises(DataError, match="cannot read image"):
            image_size(tmp_path / name)


def test_image_size_reads_header_only(tmp_path, monkeypatch):
    Image.new("RGB", (2000, 1500)).save(tmp_path / "big.png")

    def no_decode(self):
        raise AssertionError("image_size decoded pixels")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decode)
    assert image_size(tmp_path / "big.png") == (2000, 1500)


def _png_header_only(path, width: int, height: int) -> None:
    """A tiny PNG whose header declares ``width x height`` (a decompression bomb when large)."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
                     + chunk(b"IEND", b""))


def test_bomb_refused_even_when_another_library_switched_pillows_guard_off(tmp_path, monkeypatch):
    """Importing sahi sets ``Image.MAX_IMAGE_PIXELS = None`` process-wide; ssdkit's own limit still holds."""
    _png_header_only(tmp_path / "bomb.png", 40000, 40000)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    monkeypatch.delenv("SSDKIT_MAX_PIXELS", raising=False)
    for read in (load_image, image_size):
        with pytest.raises(DataError, match=r"bomb\.png.*1600000000 pixels.*limit of 178956970.*SSDKIT_MAX_PIXELS"):
            read(tmp_path / "bomb.png")


def test_pixel_limit_from_the_environment(tmp_path, monkeypatch):
    Image.fromarray(_gradient(48, 32)).save(tmp_path / "small.png")
    monkeypatch.setenv("SSDKIT_MAX_PIXELS", "1000")
    with pytest.raises(DataError, match="1536 pixels is over the decompression bomb limit of 1000"):
        load_image(tmp_path / "small.png")
    monkeypatch.setenv("SSDKIT_MAX_PIXELS", "1536")
    assert load_image(tmp_path / "small.png").shape == (3, 32, 48)
    monkeypatch.setenv("SSDKIT_MAX_PIXELS", "lots")
    with pytest.raises(SSDKitError, match="SSDKIT_MAX_PIXELS: expected a positive integer"):
        image_size(tmp_path / "small.png")


def test_a_larger_limit_than_pillows_is_honoured(tmp_path, monkeypatch):
    """A 40000 x 40000 header passes ssdkit's check when the user raised the limit (Pillow's is raised to match)."""
    _png_header_only(tmp_path / "big.png", 40000, 40000)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 89_478_485)
    monkeypatch.setenv("SSDKIT_MAX_PIXELS", str(40000 * 40000))
    assert image_size(tmp_path / "big.png") == (40000, 40000)
