"""predict: folders, globs, unreadable files, EXIF rotation, detections.json / images.json, drawn images."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from ssdkit.errors import CheckpointError, SSDKitError
from ssdkit.predict import expand_inputs, predict


def _make_folder(root):
    root.mkdir()
    (root / "sub").mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 60), dtype=np.uint8), mode="L").save(root / "gray.png")
    # stored 80 wide x 50 high, EXIF orientation 6 (rotate 90 cw): shown 50 wide x 80 high
    im = Image.fromarray(rng.integers(0, 255, (50, 80, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6
    im.save(root / "sub" / "rotated.JPG", exif=exif.tobytes())
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    (root / "notes.txt").write_text("not an image")


def test_predict_folder(tmp_path, tiny_checkpoint, capsys):
    _make_folder(tmp_path / "imgs")
    out = tmp_path / "out"
    summary = predict(tiny_checkpoint, [str(tmp_path / "imgs")], out, score=0.3, batch=2, device="cpu", progress=True)
    assert summary["images"] == 2
    assert len(summary["skipped"]) == 1 and "broken.jpg" in summary["skipped"][0]
    assert "\n" not in summary["skipped"][0]
    err = capsys.readouterr().err
    assert err.count("skipped:") == 1 and "broken.jpg" in err

    drawn = {p.split("/")[-1]: p for p in summary["drawn"]}
    assert set(drawn) == {"gray.png", "rotated.jpg"}
    assert Image.open(drawn["rotated.jpg"]).size == (50, 80)  # drawn the right side up
    assert Image.open(drawn["gray.png"]).size == (60, 40)

    results = json.loads((out / "detections.json").read_text())
    index = json.loads((out / "images.json").read_text())
    assert isinstance(results, list) and len(results) == summary["detections"]
    ids = {img["id"] for img in index["images"]}
    assert ids == {"gray", "rotated"}
    sizes = {img["id"]: (img["width"], img["height"]) for img in index["images"]}
    assert sizes["rotated"] == (50, 80)
    assert [c["id"] for c in index["categories"]] == [1, 2, 3]
    for r in results:
        assert r["image_id"] in ids and r["category_id"] in (1, 2, 3) and r["score"] > 0.3
        w, h = sizes[r["image_id"]]
        x, y, bw, bh = r["bbox"]
        assert 0 <= x <= x + bw <= w + 1e-3 and 0 <= y <= y + bh <= h + 1e-3


def test_cli_text_mode_reports_each_skip_once(tmp_path, tiny_checkpoint, capsys):
    from ssdkit.cli import main

    _make_folder(tmp_path / "imgs")
    missing = str(tmp_path / "nope.jpg")
    argv = ["predict", "--checkpoint", str(tiny_checkpoint), str(tmp_path / "imgs"), missing,
            "--out", str(tmp_path / "out"), "--device", "cpu", "--no-draw"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert text.count("skipped:") == 2, text  # one unreadable file, one missing input
    assert text.count("broken.jpg") == 1 and text.count("nope.jpg") == 1, text
    assert "2 skipped" in captured.out


def test_predict_results_evaluate_against_coco_ground_truth(tmp_path, tiny_checkpoint):
    from ssdkit.metrics import evaluate_coco_files

    _make_folder(tmp_path / "imgs")
    out = tmp_path / "out"
    predict(tiny_checkpoint, [str(tmp_path / "imgs" / "**" / "*.*")], out, score=0.2, device="cpu", draw=False,
            progress=False)
    index = json.loads((out / "images.json").read_text())
    gt = dict(index, annotations=[{"id": 1, "image_id": "gray", "category_id": 2, "bbox": [5, 5, 20, 20],
                                   "area": 400, "iscrowd": 0}])
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    result = evaluate_coco_files(tmp_path / "gt.json", out / "detections.json")
    assert "AP" in result
    assert not (out / "gray.png").exists()  # draw=False


def test_numeric_stems_become_integer_ids(tmp_path, tiny_checkpoint):
    d = tmp_path / "coco"
    d.mkdir()
    for stem in ("000000000139", "000000000285"):
        Image.new("RGB", (64, 48), (120, 30, 200)).save(d / f"{stem}.jpg")
    summary = predict(tiny_checkpoint, [str(d)], tmp_path / "out", device="cpu", progress=False)
    index = json.loads((tmp_path / "out" / "images.json").read_text())
    assert summary["images"] == 2 and sorted(i["id"] for i in index["images"]) == [139, 285]


def test_expand_inputs_reports_missing_and_dedupes(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.PNG")
    files, problems = expand_inputs([str(tmp_path), str(tmp_path / "a.PNG"), str(tmp_path / "nope.jpg"),
                                     str(tmp_path / "*.gif")])
    assert [f.name for f in files] == ["a.PNG"]
    assert len(problems) == 2 and "nope.jpg" in problems[0] and "*.gif" in problems[1]


def test_predict_errors(tmp_path, tiny_checkpoint):
    with pytest.raises(CheckpointError, match="missing.pt"):
        predict(tmp_path / "missing.pt", [str(tmp_path)], tmp_path / "out", device="cpu", progress=False)
    with pytest.raises(SSDKitError, match="no image files"):
        predict(tiny_checkpoint, [str(tmp_path / "nothing_here")], tmp_path / "out", device="cpu", progress=False)


def test_tiled_predict_on_gray_16_bit_and_rgb_files(tmp_path, tiny_checkpoint, monkeypatch):
    import ssdkit.predict as predict_module
    from ssdkit.data.image import load_image
    from ssdkit.data.tiles import TileSpec
    from ssdkit.inference import Detector

    d = tmp_path / "big"
    d.mkdir()
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (260, 400), dtype=np.uint8), mode="L").save(d / "gray.png")
    Image.fromarray(rng.integers(0, 65535, (300, 170), dtype=np.uint16)).save(d / "deep.png")  # 16-bit gray
    Image.fromarray(rng.integers(0, 255, (150, 333, 3), dtype=np.uint8)).save(d / "rgb.jpg", quality=95)
    assert Image.open(d / "deep.png").mode.startswith("I")
    spec = TileSpec(size=128, overlap=0.25, merge="nmm", match="ios")
    out = tmp_path / "out"
    summary = predict(tiny_checkpoint, [str(d)], out, score=0.3, batch=4, device="cpu", progress=False, tile=spec)
    assert summary["images"] == 3 and summary["detections"] > 0
    index = json.loads((out / "images.json").read_text())
    sizes = {img["id"]: (img["width"], img["height"]) for img in index["images"]}
    assert sizes == {"gray": (400, 260), "deep": (170, 300), "rgb": (333, 150)}
    results = json.loads((out / "detections.json").read_text())
    for r in results:
        w, h = sizes[r["image_id"]]
        x, y, bw, bh = r["bbox"]
        assert 0 <= x <= x + bw <= w + 1e-3 and 0 <= y <= y + bh <= h + 1e-3 and r["score"] > 0.3
    assert {p.split("/")[-1] for p in summary["drawn"]} == {"gray.png", "deep.png", "rgb.jpg"}
    assert Image.open(out / "deep.png").size == (170, 300)
    # exactly the tiled Detector's detections (same batch of windows: the three files are one chunk)
    files = sorted(d.iterdir())
    det = Detector.from_checkpoint(tiny_checkpoint, device="cpu", score_thresh=0.3, batch_size=4, tile=spec)
    expect = det([load_image(p) for p in files])
    assert sum(len(e["scores"]) for e in expect) == len(results)
    for p, e in zip(files, expect):
        mine = [r for r in results if r["image_id"] == p.stem]
        assert sorted(r["score"] for r in mine) == pytest.approx(sorted(e["scores"].tolist()))
    # a pixel budget per chunk: with a tiny one every image is its own chunk, same detections
    monkeypatch.setattr(predict_module, "TILED_CHUNK_PIXELS", 1)
    calls = []
    real = Detector.__call__
    monkeypatch.setattr(Detector, "__call__", lambda self, images, **kw: calls.append(len(images)) or
                        real(self, images, **kw))
    again = predict(tiny_checkpoint, [str(d)], tmp_path / "out2", score=0.3, batch=4, device="cpu", progress=False,
                    tile=spec, draw=False)
    assert calls == [1, 1, 1] and again["detections"] == summary["detections"]
