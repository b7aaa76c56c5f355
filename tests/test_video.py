"""ssdkit.video: a generated 2-second clip -> one JSON record per frame and a playable annotated video."""

from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pytest

from ssdkit.errors import SSDKitError
from ssdkit.inference import Detector
from ssdkit.video import predict_video

av = pytest.importorskip("av")

FPS, SECONDS, W, H = 10, 2, 160, 120


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A 2 s, 10 fps, 160x120 H.264 clip of a moving square, written with PyAV."""
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=Fraction(FPS))
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        for i in range(FPS * SECONDS):
            img = np.full((H, W, 3), 40, np.uint8)
            img[30:70, 10 + 4 * i:50 + 4 * i] = (220, 60, 60)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def _frames(path):
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0)), float(c.streams.video[0].average_rate)


def test_one_record_per_frame_and_same_frame_count(clip, tmp_path, tiny_checkpoint):
    detector = Detector.from_checkpoint(tiny_checkpoint, device="cpu", preset="evaluate")
    result = predict_video(detector, clip, tmp_path / "out", batch=8, progress=False)
    doc = json.loads((tmp_path / "out" / "clip.detections.json").read_text())
    n = FPS * SECONDS
    assert result["frames"] == result["processed"] == n and doc["frames"] == n and len(doc["records"]) == n
    assert [r["frame"] for r in doc["records"]] == list(range(n))
    assert doc["records"][10]["time"] == pytest.approx(1.0, abs=1e-3) and doc["fps"] == pytest.approx(FPS)
    rec = doc["records"][0]
    assert len(rec["boxes"]) == len(rec["labels"]) == len(rec["names"]) == len(rec["scores"]) > 0
    boxes = np.array([b for r in doc["records"] for b in r["boxes"]])
    assert boxes.min() >= 0 and boxes[:, 2].max() <= W and boxes[:, 3].max() <= H  # frame pixels
    frames, fps = _frames(result["video"])
    assert frames == n and fps == pytest.approx(FPS)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["clip.annotated.mp4", "clip.detections.json"]


def test_every_and_bad_videos(clip, tmp_path, tiny_checkpoint):
    result = predict_video(tiny_checkpoint, clip, tmp_path / "every", every=5, batch=3, progress=False)
    doc = json.loads(open(result["json"]).read())
    assert [r["frame"] for r in doc["records"]] == [0, 5, 10, 15] and result["frames"] == 20
    assert _frames(result["video"]) == (4, pytest.approx(FPS / 5))
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"this is not a video" * 100)
    for path, message in {bad: "not a readable video", tmp_path / "none.mp4": "not found"}.items():
        with pytest.raises(SSDKitError) as e:
            predict_video(tiny_checkpoint, path, tmp_path / "x", progress=False)
        assert str(path) in str(e.value) and message in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(SSDKitError, match="every"):
        predict_video(tiny_checkpoint, clip, tmp_path / "x", every=0)
