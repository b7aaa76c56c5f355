"""Drawing and plots: files exist, have the right size, and pixels change where boxes are drawn."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from metrics import random_dataset
from PIL import Image

from ssdkit.errors import SSDKitError
from ssdkit.metrics import confusion_matrix, evaluate_tide, evaluate_voc, precision_recall_f1
from ssdkit.viz import (
    class_color,
    draw_detections,
    plot_anchor_fit,
    plot_pr_curves,
    plot_training_curves,
    save_image,
)
from ssdkit.viz_report import plot_confusion_matrix, plot_pr_f1, plot_tide


def no_temp_files(folder):
    return not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_draw_detections_draws_box_in_class_colour():
    image = torch.zeros(3, 64, 80, dtype=torch.uint8)
    out = draw_detections(image, torch.tensor([[10.0, 20.0, 50.0, 60.0]]), torch.tensor([2]), torch.tensor([0.87]),
                          class_names=["a", "b", "dog"])  # fmt: skip
    assert out.shape == (3, 64, 80) and out.dtype == torch.uint8
    assert image.sum() == 0  # input untouched
    assert out[:, 40, 10].tolist() == list(class_color(2))  # left edge, below the caption
    assert out[:, 60, 30].tolist() == list(class_color(2))  # bottom edge
    assert out[:, 40, 30].sum() == 0  # inside the box, not filled
    assert out[:, 5, 75].sum() == 0  # far away
    assert class_color(2) != class_color(3) and class_color(25) == class_color(25)


def test_draw_detections_caption_and_empty():
    image = torch.full((3, 50, 120), 255, dtype=torch.uint8)
    boxes = torch.tensor([[5.0, 20.0, 110.0, 45.0]])
    plain = draw_detections(image, boxes, torch.tensor([0]))
    scored = draw_detections(image, boxes, torch.tensor([0]), torch.tensor([0.87]), class_names=["person"])
    assert not torch.equal(plain, scored)  # the caption text differs
    assert torch.equal(draw_detections(image, torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64)), image)
    with pytest.raises(SSDKitError, match="uint8"):
        draw_detections(image.float(), boxes, torch.tensor([0]))
    with pytest.raises(SSDKitError, match="labels"):
        draw_detections(image, boxes, torch.tensor([0, 1]))


def test_save_image_round_trip(tmp_path):
    image = torch.randint(0, 256, (3, 17, 23), dtype=torch.uint8)
    path = tmp_path / "sub" / "img.png"
    save_image(image, path)
    back = np.asarray(Image.open(path))
    assert back.shape == (17, 23, 3)
    np.testing.assert_array_equal(back, image.permute(1, 2, 0).numpy())
    save_image(image, tmp_path / "img.jpg")
    assert Image.open(tmp_path / "img.jpg").format == "JPEG"
    assert no_temp_files(tmp_path) and no_temp_files(tmp_path / "sub")
    with pytest.raises(SSDKitError, match="img.xyz"):
        save_image(image, tmp_path / "img.xyz")


def test_plots_are_written(tmp_path):
    gts = [{"boxes": torch.tensor([[0.0, 0, 10, 10], [20, 20, 40, 40]]), "labels": torch.tensor([0, 1])}]
    dets = [
        {
            "boxes": torch.tensor([[0.0, 0, 10, 10], [20, 20, 40, 41], [50, 50, 60, 60]]),
            "labels": torch.tensor([0, 1, 1]),
            "scores": torch.tensor([0.9, 0.8, 0.95]),
        }
    ]
    result = evaluate_voc(dets, gts, 3, ["cat", "dog", "none"])
    plot_pr_curves(result, tmp_path / "pr.png")
    records = [
        {"iteration": i, "loss": 5 / (i + 1), "loc_loss": 2 / (i + 1), "cls_loss": 3 / (i + 1)} for i in range(50)
    ]
    records += [{"epoch": e, "map": 0.1 * e} for e in range(1, 4)]
    plot_training_curves(records, tmp_path / "train.png")
    plot_training_curves(records[:5], tmp_path / "train_no_eval.svg")
    sizes = np.exp(np.random.default_rng(0).uniform(1, 5, (200, 2)))
    plot_anchor_fit(sizes, [(30, 30), (42, 21), (21, 42), (60, 60)], tmp_path / "anchors.png")
    for name in ("pr.png", "train.png", "anchors.png"):
        with Image.open(tmp_path / name) as im:
            assert im.format == "PNG" and im.size[0] > 300 and im.size[1] > 200
            arr = np.asarray(im.convert("L"))
            assert arr.min() < 100 and arr.max() > 200  # something is drawn on the white canvas
    assert (tmp_path / "train_no_eval.svg").read_text().lstrip().startswith("<?xml")
    assert no_temp_files(tmp_path)
    with pytest.raises(SSDKitError, match="precision"):
        plot_pr_curves({"map": 0.5}, tmp_path / "x.png")


def assert_png_drawn(path, min_size=(300, 200)):
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] >= min_size[0] and im.size[1] >= min_size[1]
        arr = np.asarray(im.convert("L"))
        assert arr.min() < 100 and arr.max() > 200
        return im.size


@pytest.mark.parametrize("num_classes", [1, 5, 80])
def test_error_plots_are_written(tmp_path, num_classes):
    dets, gts = random_dataset(0, num_images=40, num_classes=num_classes, integer=False)
    names = [f"class {k}" for k in range(num_classes)]
    cm = confusion_matrix(dets, gts, num_classes, score_threshold=0.3, class_names=names)
    plot_confusion_matrix(cm, tmp_path / "cm.png")
    size = assert_png_drawn(tmp_path / "cm.png")
    if num_classes == 80:
        assert size[0] > 1200 and size[1] > 2 * 1200  # one map above the other, cells of readable size
    prf = precision_recall_f1(dets, gts, num_classes, class_names=names)
    plot_pr_f1(prf, tmp_path / "prf.png")
    assert_png_drawn(tmp_path / "prf.png", (900, 300))
    plot_tide(evaluate_tide(dets, gts, num_classes), tmp_path / "tide.png")
    assert_png_drawn(tmp_path / "tide.png", (700, 250))
    if num_classes == 5:
        plot_confusion_matrix(cm, tmp_path / "cm.svg")
        assert (tmp_path / "cm.svg").read_text().lstrip().startswith("<?xml")
    assert no_temp_files(tmp_path)


def test_error_plots_empty_and_bad_input(tmp_path):
    # nothing detected: no best threshold, NaN rows, TIDE NaNs; the plots still come out
    gts = [{"boxes": torch.tensor([[0.0, 0, 10, 10]]), "labels": torch.tensor([0])}]
    dets = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64), "scores": torch.zeros(0)}]
    plot_confusion_matrix(confusion_matrix(dets, gts, 2), tmp_path / "cm.png")
    plot_pr_f1(precision_recall_f1(dets, gts, 2), tmp_path / "prf.png")
    plot_tide(evaluate_tide(dets, gts, 2), tmp_path / "tide.png")
    for name in ("cm.png", "prf.png", "tide.png"):
        assert (tmp_path / name).is_file()
    for plot, key in ((plot_confusion_matrix, "counts"), (plot_pr_f1, "thresholds"), (plot_tide, "dAP")):
        with pytest.raises(SSDKitError, match=key):
            plot({"map": 0.5}, tmp_path / "x.png")
    with pytest.raises(SSDKitError, match="one row per class"):
        plot_confusion_matrix({"counts": np.zeros((2, 2)), "normalized": np.zeros((2, 2)), "class_names": ["a"]},
                              tmp_path / "x.png")  # fmt: skip


def test_training_curves_show_a_single_evaluation_as_its_value(tmp_path):
    """One evaluation is written as a labelled value; several as a line by iteration (the best marked)."""
    records = [{"iteration": i, "epoch": 1, "loss": 5 / i, "loc_loss": 2 / i, "cls_loss": 3 / i} for i in range(1, 9)]
    one = records + [{"iteration": 8, "epoch": 1, "metric": "voc07", "map": 0.4321}]
    plot_training_curves(one, tmp_path / "one.svg")
    svg = (tmp_path / "one.svg").read_text()
    assert "mAP 0.4321" in svg and "one evaluation, at iteration 8" in svg and "voc07" in svg
    many = records + [{"iteration": i, "epoch": i // 4, "metric": "voc07", "map": m} for i, m in ((4, 0.2), (8, 0.3))]
    plot_training_curves(many, tmp_path / "many.svg")
    assert "best 0.3000" in (tmp_path / "many.svg").read_text()


def test_run_pictures(tmp_path):
    from ssdkit.viz_run import batch_grid, plot_labels, predictions_side_by_side

    names = ["cat", "dog", "bird"]
    boxes = torch.tensor([[10.0, 10, 50, 40], [0, 0, 300, 300], [100, 120, 130, 200]])
    plot_labels(names, torch.tensor([0, 1, 1]), boxes, torch.tensor([[300, 300], [300, 300], [640, 480]]),
                tmp_path / "labels.png", num_images=2)
    plot_labels(names, torch.zeros(0), torch.zeros(0, 4), torch.zeros(0, 2), tmp_path / "empty.png")
    for name in ("labels.png", "empty.png"):
        with Image.open(tmp_path / name) as im:
            assert im.format == "PNG" and im.size[0] > 800 and im.size[1] > 600

    images = torch.full((3, 3, 64, 64), 128, dtype=torch.uint8)
    targets = [{"boxes": boxes[:2] / 5, "labels": torch.tensor([0, 2]), "ignore": torch.tensor([False, True]),
                "image_id": f"im{i}"} for i in range(3)]
    grid = batch_grid(images, targets, names)
    assert grid.dtype == torch.uint8 and grid.shape[0] == 3
    assert grid.shape[2] > 2 * 256 and grid.shape[1] > 2 * 256  # 2 x 2 tiles, each enlarged (at most 4x)
    assert (grid == torch.tensor(class_color(0)).view(3, 1, 1)).all(0).any()  # a box in the class colour

    image = torch.full((3, 48, 64), 200, dtype=torch.uint8)
    gt = {"boxes": torch.tensor([[4.0, 4, 30, 30]]), "labels": torch.tensor([1]), "image_id": "a"}
    det = {"boxes": torch.tensor([[5.0, 5, 31, 31], [0, 0, 10, 10]]), "labels": torch.tensor([1, 2]),
           "scores": torch.tensor([0.9, 0.1])}
    side = predictions_side_by_side([(image, gt, det)] * 2, names, 0.5)
    assert side.shape[1] > 2 * 192 and side.shape[2] > 2 * 256  # two rows of two panels, enlarged 4x
    assert not (side == torch.tensor(class_color(2)).view(3, 1, 1)).all(0).any()  # the 0.1 box is not drawn
    assert (side == torch.tensor(class_color(1)).view(3, 1, 1)).all(0).any()


def test_previews_draw_every_object_of_dense_images():
    from ssdkit.viz_run import drawn_predictions

    scores = torch.linspace(0.99, 0.01, 100)
    keep, above = drawn_predictions(scores, 3, 0.5)
    assert above == 50 and keep.tolist() == list(range(20))  # a sparse image: the 20 best
    keep, above = drawn_predictions(scores, 35, 0.5)
    assert keep.tolist() == list(range(50))  # 35 objects: up to 70, here every one above the threshold
    keep, above = drawn_predictions(scores.flip(0), 35, 0.3)
    assert above == 70 and keep.tolist() == list(range(99, 29, -1))  # best first
