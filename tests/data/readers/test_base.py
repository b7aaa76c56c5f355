"""Helpers every reader shares: reading an image size into a Problem on failure."""

from __future__ import annotations

from ssdkit.data.readers.base import read_image_size


def test_read_image_size_reports_one_problem(tmp_path, make_image):
    good = make_image(tmp_path / "good.png", size=(40, 30))
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    problems = []
    assert read_image_size(good, problems) == (40, 30) and problems == []

    assert read_image_size(bad, problems) is None
    assert read_image_size(tmp_path / "gone.jpg", problems) is None
    assert read_image_size(bad, problems, "list.txt", "line 3") is None
    unreadable, missing, listed = problems
    # filed under the image: the message does not repeat its path
    assert (unreadable.file, unreadable.kind) == (str(bad), "unreadable")
    assert unreadable.message.startswith("cannot read image") and unreadable.message.endswith("; skipped")
    assert (missing.file, missing.kind) == (str(tmp_path / "gone.jpg"), "missing_image")
    # filed under another file: the message names the image
    assert (listed.file, listed.element, listed.kind) == ("list.txt", "line 3", "unreadable")
    assert str(bad) in listed.message
