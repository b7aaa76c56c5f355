"""``ssdkit evaluate``'s three modes agree, and ``--report`` writes the error report in each."""

import json

import numpy as np
import pytest
import torch
from tiling_oracle import ColourOracle, scene

from ssdkit.checkpoint import save_checkpoint
from ssdkit.config import Config, ModelConfig
from ssdkit.data.sample import Sample
from ssdkit.data.shapes import write_shapes
from ssdkit.data.writers import write_dataset
from ssdkit.engine.evaluation import evaluate, format_metrics
from ssdkit.errors import DataError, SSDKitError
from ssdkit.models import build_model
from ssdkit.predict import predict

NAMES = ("circle", "square", "triangle")


class _Scenes:
    """Flat-coloured rectangles on black (what the ColourOracle detects), as a DetectionSource."""

    class_names = NAMES

    def __init__(self, n, seed):
        g = torch.Generator().manual_seed(seed)
        self.items = []
        for i in range(n):
            h, w = 120 + 10 * i, 160
            objs = []
            for label in range(3):
                x0, y0 = int(torch.randint(0, w - 50, (1,), generator=g)), int(torch.randint(0, h - 40, (1,),
                                                                                            generator=g))
                objs.append((label, (x0, y0, x0 + 30 + 5 * label, y0 + 25 + 4 * i)))
            self.items.append((h, w, objs))

    def __len__(self):
        return len(self.items)

    def sample(self, i):
        h, w, objs = self.items[i]
        return Sample(f"{i:06d}", None, w, h, [list(b) for _, b in objs], [lab for lab, _ in objs],
                      class_names=NAMES)

    def load_image(self, i):
        h, w, objs = self.items[i]
        return scene(h, w, objs)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("roundtrip")
    voc = write_dataset(_Scenes(6, 0), root / "voc", "voc", quality=100)
    coco = write_dataset(_Scenes(6, 4), root / "coco", "coco", quality=100)
    # COCO ids that are neither contiguous nor 0-based, as real files have them
    gt_path = coco / "annotations" / "instances_train.json"
    d = json.loads(gt_path.read_text())
    cat_map = {1: 17, 2: 5, 3: 40}
    for img in d["images"]:
        img["id"] = img["id"] * 7 + 1000
    for a in d["annotations"]:
        a["image_id"] = a["image_id"] * 7 + 1000
        a["category_id"] = cat_map[a["category_id"]]
    for c in d["categories"]:
        c["id"] = cat_map[c["id"]]
    gt_path.write_text(json.dumps(d))
    cfg = ModelConfig(width_mult=0.125, num_classes=len(NAMES) + 1)
    ckpt = root / "m.pt"
    save_checkpoint(ckpt, build_model(cfg), Config(model=cfg), NAMES)
    return {"root": root, "voc": voc, "coco": coco, "gt": gt_path, "ckpt": ckpt, "cfg": cfg}


@pytest.fixture(autouse=True)
def oracle(setup, monkeypatch):
    """The checkpoint's model is replaced by a perfect detector of the scenes (evaluate and predict load it the
    same way), so the mAPs compared are far from 0."""
    import ssdkit.checkpoint

    monkeypatch.setattr(ssdkit.checkpoint, "model_from_checkpoint",
                        lambda path, device="cpu": (ColourOracle(setup["cfg"]).to(device), Config(model=setup["cfg"]),
                                                    NAMES))


def _same(a, b):
    assert a["map"] == pytest.approx(b["map"], abs=1e-6)
    for name in NAMES:
        assert a["ap"][name] == pytest.approx(b["ap"][name], abs=1e-6)
        assert np.allclose(a["precision"][name], b["precision"][name], atol=1e-6)


def test_predict_then_evaluate_equals_evaluate_checkpoint_on_a_voc_set(setup, tmp_path):
    direct = evaluate(setup["ckpt"], str(setup["voc"]), device="cpu", progress=False)
    pred = predict(setup["ckpt"], [str(setup["voc"] / "JPEGImages")], tmp_path / "p", score=0.01, device="cpu",
                   draw=False, progress=False)
    assert direct["num_images"] == pred["images"] == 6 and direct["map"] > 0.9
    _same(evaluate(data=str(setup["voc"]), detections=pred["detections_json"]), direct)


def test_predict_with_gt_ids_evaluates_against_a_coco_ground_truth(setup, tmp_path):
    images = setup["coco"] / "images"
    direct = evaluate(setup["ckpt"], str(setup["gt"]), device="cpu", progress=False)
    pred = predict(setup["ckpt"], [str(images)], tmp_path / "p", score=0.01, device="cpu", draw=False,
                   progress=False, gt=setup["gt"])
    rows = json.loads((tmp_path / "p" / "detections.json").read_text())
    assert {r["image_id"] for r in rows} <= {i * 7 + 1000 for i in range(6)}
    assert {r["category_id"] for r in rows} <= {17, 5, 40}
    _same(evaluate(gt=setup["gt"], detections=pred["detections_json"]), direct)  # by the COCO files
    _same(evaluate(data=str(setup["gt"]), detections=pred["detections_json"]), direct)  # by the dataset
    coco_direct = evaluate(setup["ckpt"], str(setup["gt"]), metric="coco", device="cpu", progress=False)
    coco_files = evaluate(gt=setup["gt"], detections=pred["detections_json"], metric="coco")
    assert coco_files["AP"] == pytest.approx(coco_direct["AP"], abs=1e-6)


def test_unmatched_files_and_classes_are_listed(setup, tmp_path):
    other = write_shapes(tmp_path / "other", count=2, seed=9, image_size=64, min_size=16, max_size=40,
                         class_names=NAMES, val_fraction=0.0, progress=False)
    (other / "JPEGImages" / "000000.jpg").rename(other / "JPEGImages" / "zzz.jpg")
    with pytest.raises(DataError, match="zzz.jpg"):
        predict(setup["ckpt"], [str(other / "JPEGImages")], tmp_path / "p", device="cpu", draw=False,
                progress=False, gt=setup["gt"])
    pred = predict(setup["ckpt"], [str(other / "JPEGImages")], tmp_path / "q", device="cpu", draw=False,
                   progress=False)
    with pytest.raises(DataError, match="not predicted"):
        evaluate(data=str(setup["voc"]), detections=pred["detections_json"])
    with pytest.raises(SSDKitError, match="does not go with --checkpoint"):
        evaluate(setup["ckpt"], detections=pred["detections_json"])


@pytest.mark.parametrize("mode", ["checkpoint", "files"])
def test_report_in_both_modes(setup, tmp_path, mode):
    if mode == "checkpoint":
        result = evaluate(setup["ckpt"], str(setup["voc"]), device="cpu", progress=False, report=tmp_path / "r",
                          size_ranges=(0, 16, 32, 96, float("inf")))
    else:
        pred = predict(setup["ckpt"], [str(setup["coco"] / "images")], tmp_path / "p", score=0.01, device="cpu",
                       draw=False, progress=False, gt=setup["gt"])
        result = evaluate(gt=setup["gt"], detections=pred["detections_json"], report=tmp_path / "r")
    paths = result["report"]["paths"]
    for key in ("report", "confusion_matrix_png", "pr_f1_png", "tide_png", "summary"):
        assert (tmp_path / "r" / paths[key].split("/")[-1]).is_file(), key
    json.loads((tmp_path / "r" / "summary.json").read_text())
    assert "report:" in format_metrics(result)
