"""Helpers for the reader tests: tiny images and annotation files written into tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image


def _make_image(
    path: Path, size: tuple[int, int] = (64, 48), mode: str = "RGB", exif_orientation: int | None = None, color=None
) -> Path:
    """Write a ``size = (width, height)`` image in ``mode`` at ``path`` (format from the extension)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.new(mode, size, color if color is not None else (0 if mode in ("L", "P", "I;16") else (0,) * len(mode)))
    kwargs = {}
    if exif_orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        kwargs["exif"] = exif
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP"}[path.suffix.lower()]
    im.save(path, format=fmt, **kwargs)
    return path


@pytest.fixture
def make_image():
    return _make_image


def voc_xml(
    filename: str,
    objects: list[dict],
    size: tuple[int, int] | None = (64, 48),
    folder: str = "VOC2007",
    path: str | None = None,
) -> str:
    """A labelImg-style annotation. ``objects``: ``{"name", "box": (x1, y1, x2, y2), "difficult"?: 0|1}``."""
    parts = ["<annotation>", f"\t<folder>{folder}</folder>", f"\t<filename>{filename}</filename>"]
    if path:
        parts.append(f"\t<path>{path}</path>")
    parts.append("\t<source>\n\t\t<database>Unknown</database>\n\t</source>")
    if size is not None:
        parts.append(
            f"\t<size>\n\t\t<width>{size[0]}</width>\n\t\t<height>{size[1]}</height>\n\t\t<depth>3</depth>\n\t</size>"
        )
    parts.append("\t<segmented>0</segmented>")
    for o in objects:
        x1, y1, x2, y2 = o["box"]
        parts.append("\t<object>")
        parts.append(f"\t\t<name>{o['name']}</name>\n\t\t<pose>Unspecified</pose>\n\t\t<truncated>0</truncated>")
        if "difficult" in o:
            parts.append(f"\t\t<difficult>{o['difficult']}</difficult>")
        parts.append(
            f"\t\t<bndbox>\n\t\t\t<xmin>{x1}</xmin>\n\t\t\t<ymin>{y1}</ymin>\n\t\t\t<xmax>{x2}</xmax>\n"
            f"\t\t\t<ymax>{y2}</ymax>\n\t\t</bndbox>"
        )
        parts.append("\t</object>")
    parts.append("</annotation>")
    return "\n".join(parts) + "\n"


@pytest.fixture
def write_voc(make_image):
    """Write one VOC image + annotation: ``write_voc(root, image_id, objects, ext=".jpg", size=(64, 48), ...)``."""

    def write(
        root: Path,
        image_id: str,
        objects: list[dict],
        ext: str = ".jpg",
        size=(64, 48),
        xml_size="same",
        filename: str | None = None,
        image: bool = True,
    ) -> Path:
        (root / "Annotations").mkdir(parents=True, exist_ok=True)
        if image:
            make_image(root / "JPEGImages" / f"{image_id}{ext}", size)
        xml = voc_xml(filename or f"{image_id}{ext}", objects, size if xml_size == "same" else xml_size)
        p = root / "Annotations" / f"{image_id}.xml"
        p.write_text(xml)
        return p

    return write
