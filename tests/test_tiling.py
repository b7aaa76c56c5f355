"""Tiled inference: merges (hand-made, SAHI, torchvision), cut boxes at window edges, the tiled Detector against
untiled inference and a per-window reference loop, edge cases, bounded batches on an 8000 x 8000 image."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from tiling_oracle import PALETTE, ColourOracle, scene
from torch import nn
from torchvision import ops

from ssdkit.coder import SSDBoxCoder
from ssdkit.data.tiles import TILE_MATCHES, TILE_MERGES, TileSpec, window_to_image
from ssdkit.errors import SSDKitError
from ssdkit.inference import Detector
from ssdkit.merge import candidate_pairs, merge_boxes, merge_tiled
from ssdkit.models import build_model
from ssdkit.tiling import image_windows


@pytest.fixture(scope="module")
def oracle(tiny_config):
    return ColourOracle(tiny_config)


def oracle_detector(oracle, tiny_config, tiny_names, tile=None, **kw) -> Detector:
    return Detector(oracle, tiny_config, tiny_names, preset="visualize", tile=tile, channels_last=False, **kw)


def B(*rows):  # noqa: N802 - boxes literal
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, 4)


# ---- merges ---------------------------------------------------------------------------------------------------

def test_merges_on_hand_made_boxes():
    # A, B, C in a row, 10 px boxes 5 px apart: IoU(A, B) = IoU(B, C) = 1/3, IoS = 1/2, A and C disjoint
    boxes = B([0, 0, 10, 10], [5, 0, 15, 10], [10, 0, 20, 10], [0, 0, 10, 10])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    labels = torch.tensor([0, 0, 0, 1])  # the last is A's twin of another class: never touched

    def run(method, match, thr):
        idx, b, s, lab = merge_boxes(boxes, scores, labels, method, match, thr)
        return idx.tolist(), b.tolist(), s.tolist(), lab.tolist()

    # IoS >= 0.5: NMS keeps A and C (B is A's); greedy NMM grows A over B, C stays; NMM chains A-B-C into one
    assert run("nms", "ios", 0.5)[0] == [0, 2, 3]
    idx, b, s, _ = run("greedy_nmm", "ios", 0.5)
    assert idx == [0, 2, 3] and b == [[0, 0, 15, 10], [10, 0, 20, 10], [0, 0, 10, 10]]
    assert s == pytest.approx([0.9, 0.7, 0.6])
    idx, b, s, lab = run("nmm", "ios", 0.5)
    assert idx == [0, 3] and b == [[0, 0, 20, 10], [0, 0, 10, 10]] and lab == [0, 1]
    # IoU >= 0.5: nothing matches
    for method in TILE_MERGES:
        assert run(method, "iou", 0.5)[0] == [0, 1, 2, 3]
    # IoU >= 0.3: NMM claims C through B, but the grown box A+B no longer matches C (IoU 0.25): C is dropped,
    # as SAHI's merge drops it; greedy NMM keeps C (only B, not a keeper, matched it)
    assert run("nmm", "iou", 0.3)[:2] == ([0, 3], [[0, 0, 15, 10], [0, 0, 10, 10]])
    assert run("greedy_nmm", "iou", 0.3)[:2] == ([0, 2, 3], [[0, 0, 15, 10], [10, 0, 20, 10], [0, 0, 10, 10]])
    # a threshold is "at or above"
    assert run("nms", "ios", 0.500001)[0] == [0, 1, 2, 3]
    # empty input
    idx, b, s, lab = merge_boxes(B(), torch.zeros(0), torch.zeros(0, dtype=torch.int64), "nmm", "ios", 0.5)
    assert idx.shape == (0,) and b.shape == (0, 4)


def random_boxes(rng, n, quantised=False):
    if quantised:  # ties in score and coordinates, exact duplicates
        xy, wh = rng.integers(0, 40, (n, 2)) * 5.0, rng.integers(1, 6, (n, 2)) * 10.0
        scores = rng.integers(1, 4, n) / 4
    else:
        xy, wh = rng.uniform(0, 200, (n, 2)), rng.uniform(2, 60, (n, 2))
        scores = rng.uniform(0.01, 1, n)
    boxes = torch.tensor(np.concatenate([xy, xy + wh], 1), dtype=torch.float32)
    scores, labels = torch.tensor(scores, dtype=torch.float32), torch.tensor(rng.integers(0, 3, n))
    if quantised:
        boxes, scores, labels = (torch.cat([t, t[:4]]) for t in (boxes, scores, labels))
    return boxes, scores, labels


def sahi_merge(boxes, scores, labels, method, match, thr):
    from sahi.postprocess.combine import GreedyNMMPostprocess, NMMPostprocess, NMSPostprocess
    from sahi.prediction import ObjectPrediction

    preds = [ObjectPrediction(bbox=b, category_id=c, category_name=str(c), score=s)
             for b, s, c in zip(boxes.tolist(), scores.tolist(), labels.tolist())]
    cls = {"nms": NMSPostprocess, "nmm": NMMPostprocess, "greedy_nmm": GreedyNMMPostprocess}[method]
    out = cls(match_threshold=thr, match_metric=match.upper(), class_agnostic=False)(preds)
    return (B(*[p.bbox.to_xyxy() for p in out]), torch.tensor([p.score.value for p in out], dtype=torch.float32),
            torch.tensor([p.category.id for p in out], dtype=torch.int64))


def as_set(boxes, scores, labels):
    rows = torch.cat([labels[:, None].double(), -scores[:, None].double(), boxes.double()], 1)
    return rows[np.lexsort(rows.numpy().T[::-1].copy())]


@pytest.mark.parametrize("quantised", [False, True])
def test_merges_equal_sahi(quantised):
    pytest.importorskip("sahi")
    rng = np.random.default_rng(1 if quantised else 0)
    for _ in range(40):
        boxes, scores, labels = random_boxes(rng, int(rng.integers(1, 50)), quantised)
        for method in TILE_MERGES:
            for match in TILE_MATCHES:
                thr = float(rng.choice([0.3, 0.5, 0.7]))
                _, b, s, lab = merge_boxes(boxes, scores, labels, method, match, thr)
                ours, ref = as_set(b, s, lab), as_set(*sahi_merge(boxes, scores, labels, method, match, thr))
                assert ours.shape == ref.shape and torch.allclose(ours, ref, atol=1e-4), (method, match, thr)


def test_nms_iou_equals_torchvision_batched_nms():
    rng = np.random.default_rng(2)
    for _ in range(20):
        boxes, scores, labels = random_boxes(rng, int(rng.integers(1, 300)))
        idx, *_ = merge_boxes(boxes, scores, labels, "nms", "iou", 0.5)
        ref = ops.batched_nms(boxes, scores, labels, 0.5)  # > instead of >=: equal without exact ties
        assert idx.tolist() == ref.tolist()


def test_candidate_pairs_are_every_intersecting_same_label_pair():
    rng = np.random.default_rng(3)
    boxes, _, labels = random_boxes(rng, 120)
    boxes[:5, 2] = boxes[:5, 0]  # degenerate boxes intersect nothing
    groups = torch.tensor(rng.integers(0, 4, 120))
    for g in (None, groups):
        i, j = candidate_pairs(boxes, labels, g)
        got = {(min(a, b), max(a, b)) for a, b in zip(i.tolist(), j.tolist())}
        assert len(got) == len(i)
        iw = (torch.minimum(boxes[:, None, 2], boxes[None, :, 2]) - torch.maximum(boxes[:, None, 0], boxes[None, :, 0]))
        ih = (torch.minimum(boxes[:, None, 3], boxes[None, :, 3]) - torch.maximum(boxes[:, None, 1], boxes[None, :, 1]))
        ok = (iw > 0) & (ih > 0) & (labels[:, None] == labels[None, :])
        if g is not None:
            ok &= g[:, None] != g[None, :]
        expect = {(a, b) for a, b in ok.nonzero().tolist() if a < b}
        assert got == expect


def test_groups_keep_one_windows_detections_apart():
    boxes, scores, labels = B([0, 0, 10, 10], [1, 0, 11, 10]), torch.tensor([0.9, 0.8]), torch.tensor([0, 0])
    assert len(merge_boxes(boxes, scores, labels, "nms", "iou", 0.5)[0]) == 1
    assert len(merge_boxes(boxes, scores, labels, "nms", "iou", 0.5, groups=torch.tensor([3, 3]))[0]) == 2
    assert len(merge_boxes(boxes, scores, labels, "nms", "iou", 0.5, groups=torch.tensor([3, 4]))[0]) == 1


# ---- cut boxes ------------------------------------------------------------------------------------------------

# image 922 x 512, two windows overlapping in x in [410, 512)
WINDOWS = torch.tensor([[0, 0, 512, 512], [410, 0, 922, 512]])


def tiled_merge(boxes, scores, wids, spec, labels=None):
    labels = torch.zeros(len(scores), dtype=torch.int64) if labels is None else labels
    b, s, lab = merge_tiled(boxes, scores, labels, torch.tensor(wids), WINDOWS, 512, 922, spec)
    return b, s, lab


@pytest.mark.parametrize("merge", TILE_MERGES)
@pytest.mark.parametrize("match", TILE_MATCHES)
def test_a_box_cut_by_a_window_edge_gives_way_to_the_whole_one(merge, match):
    # object [480, 560) x [100, 150): window 0 sees [480, 512) (cut, scored higher), window 1 all of it
    boxes = B([480, 100, 512, 150], [480.5, 100.5, 559.5, 150])
    scores = torch.tensor([0.9, 0.6])
    b, s, _ = tiled_merge(boxes, scores, [0, 1], TileSpec(merge=merge, match=match))
    assert b.tolist() == [[480.5, 100.5, 559.5, 150]] and s.tolist() == pytest.approx([0.6])
    # the same order of windows reversed, and a second unrelated object: untouched
    b, s, _ = tiled_merge(torch.cat([boxes.flip(0), B([10, 10, 40, 40])]), torch.tensor([0.6, 0.9, 0.5]), [1, 0, 0],
                          TileSpec(merge=merge, match=match))
    assert b.tolist() == [[480.5, 100.5, 559.5, 150], [10, 10, 40, 40]]


def test_why_sahi_rules_keep_partial_copies():
    boxes, scores = B([480, 100, 512, 150], [480, 100, 560, 150]), torch.tensor([0.9, 0.6])
    sahi = TileSpec(window_aware=False)
    # IoU = 32 / 80 = 0.4 < 0.5: NMS keeps both, a whole and a partial copy
    assert len(tiled_merge(boxes, scores, [0, 1], sahi)[0]) == 2
    # IoS = 1: NMS keeps the better-scored, partial box, and loses the object's extent
    assert tiled_merge(boxes, scores, [0, 1], dataclasses.replace(sahi, match="ios"))[0].tolist() == \
        [[480, 100, 512, 150]]


def test_partial_boxes_of_an_object_no_window_holds_become_their_union():
    # object [380, 530) is wider than the overlap [410, 512): both windows cut it
    boxes, scores = B([380, 200, 512, 260], [410, 201, 530, 259]), torch.tensor([0.7, 0.8])
    for merge in TILE_MERGES:
        for match in TILE_MATCHES:
            b, s, _ = tiled_merge(boxes, scores, [0, 1], TileSpec(merge=merge, match=match))
            assert b.tolist() == [[380, 200, 530, 260]] and s.tolist() == pytest.approx([0.8]), (merge, match)


def test_pieces_on_touching_windows_join_when_the_overlap_is_zero():
    # overlap 0: four windows meeting at (256, 256), an object across that corner is four pieces
    wins = torch.tensor([[0, 0, 256, 256], [256, 0, 512, 256], [0, 256, 256, 512], [256, 256, 512, 512]])
    boxes = B([240, 240, 256, 256], [256, 241, 280, 256], [241, 256, 256, 275], [256, 256, 280, 275])
    spec = TileSpec(size=256, overlap=0.0)
    zeros = torch.zeros(4, dtype=torch.int64)
    b, s, _ = merge_tiled(boxes, torch.tensor([0.6, 0.9, 0.7, 0.8]), zeros, torch.arange(4), wins, 512, 512, spec)
    assert b.tolist() == [[240, 240, 280, 275]] and s.tolist() == pytest.approx([0.9])
    # two objects meeting at an edge, their extents along it disjoint: both stay
    boxes = B([230, 100, 256, 120], [256, 130, 280, 150])
    b, _, _ = merge_tiled(boxes, torch.tensor([0.9, 0.8]), zeros[:2], torch.arange(2), wins, 512, 512, spec)
    assert len(b) == 2


def test_a_large_box_does_not_swallow_a_small_cut_object():
    # window 1 has a large box of the same class around the small object window 0 cuts: they disagree inside the
    # common area, so the small one stays (IoU matching keeps both)
    boxes, scores = B([495, 100, 512, 120], [420, 50, 700, 300]), torch.tensor([0.9, 0.5])
    b, _, _ = tiled_merge(boxes, scores, [0, 1], TileSpec(match="iou"))
    assert len(b) == 2
    # other classes never interact
    b, _, _ = tiled_merge(B([480, 100, 512, 150], [480, 100, 560, 150]), torch.tensor([0.9, 0.6]), [0, 1],
                          TileSpec(), labels=torch.tensor([0, 1]))
    assert len(b) == 2


@pytest.mark.parametrize("merge", TILE_MERGES)
@pytest.mark.parametrize("match", TILE_MATCHES)
def test_tiled_detector_reports_a_cut_object_once_with_its_full_box(oracle, tiny_config, tiny_names, merge, match):
    # 1000 x 600: windows x [0, 512) [410, 922) [488, 1000), y [0, 512) [88, 600); the square [490, 600) x
    # [200, 260) is cut by window 0's edge x = 512 and whole in two others; the red one sits in four windows
    objects = [(0, (490, 200, 600, 260)), (1, (100, 430, 140, 470))]
    spec = TileSpec(size=512, overlap=0.2, merge=merge, match=match)
    res = oracle_detector(oracle, tiny_config, tiny_names, tile=spec)(scene(600, 1000, objects))
    assert res["labels"].tolist() == [0, 1] or res["labels"].tolist() == [1, 0]
    for label, box in objects:
        k = res["labels"].tolist().index(label)
        assert torch.allclose(res["boxes"][k], torch.tensor(box, dtype=torch.float32), atol=2.0)
    assert res["names"] == [tiny_names[c] for c in res["labels"].tolist()]
    if (merge, match) == ("nms", "iou"):  # SAHI's rules keep the partial copy from window 0
        sahi = dataclasses.replace(spec, window_aware=False)
        res = oracle_detector(oracle, tiny_config, tiny_names, tile=sahi)(scene(600, 1000, objects))
        assert (res["labels"] == 0).sum() == 2


# ---- the tiled Detector ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_model(tiny_config):
    torch.manual_seed(0)
    return build_model(tiny_config).eval()


@pytest.mark.parametrize("h, w", [(200, 250), (512, 512), (512, 100), (37, 512)])
def test_one_window_image_equals_untiled_bit_for_bit(tiny_model, tiny_config, tiny_names, h, w):
    g = torch.Generator().manual_seed(h * w)
    image = torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g)
    plain = Detector(tiny_model, tiny_config, tiny_names, preset="evaluate")
    for spec, im in ((TileSpec(size=512), image),
                     (TileSpec(size=512, full_image=True, merge="nmm", match="ios"), image.float() / 255)):
        a = Detector(tiny_model, tiny_config, tiny_names, preset="evaluate", tile=spec)(im)
        b = plain(im)
        assert len(a["boxes"]) > 0
        for key in ("boxes", "labels", "scores"):
            assert torch.equal(a[key], b[key]), key
        assert a["names"] == b["names"]


def reference_tiled(detector: Detector, image: torch.Tensor, spec: TileSpec) -> dict:
    """Tiling as a plain loop: every window on its own through the untiled Detector, shifted, merged."""
    plain = Detector(detector.model, detector.config, detector.class_names, preset=detector.preset,
                     channels_last=detector.memory_format == torch.channels_last)
    h, w = image.shape[1:]
    windows = image_windows(h, w, spec)
    parts = []
    for k, (x0, y0, x1, y1) in enumerate(windows.tolist()):
        det = plain(image[:, y0:y1, x0:x1].contiguous())
        parts.append((det["boxes"] + torch.tensor([x0, y0, x0, y0]), det["scores"], det["labels"],
                      torch.full((len(det["scores"]),), k)))
    boxes, scores, labels, wid = (torch.cat(t) for t in zip(*parts))
    if len(windows) > 1:
        boxes, scores, labels = merge_tiled(boxes, scores, labels, wid, windows, h, w, spec)
    limit = detector.settings["max_detections"]
    return {"boxes": boxes[:limit], "scores": scores[:limit], "labels": labels[:limit]}


@pytest.mark.parametrize("spec", [TileSpec(size=256, overlap=0.2), TileSpec(size=256, overlap=0.0, merge="nmm"),
                                  TileSpec(size=300, overlap=0.5, merge="greedy_nmm", match="ios", full_image=True)])
def test_batched_equals_a_per_window_loop(oracle, tiny_config, tiny_names, spec):
    rng = np.random.default_rng(4)
    images = []
    for h, w in [(700, 901), (256, 256), (300, 1000), (120, 90)]:
        objects = []
        for label in PALETTE:
            x0, y0 = int(rng.integers(0, w - 40)), int(rng.integers(0, h - 40))
            objects.append((label, (x0, y0, x0 + int(rng.integers(8, 40)), y0 + int(rng.integers(8, 40)))))
        images.append(scene(h, w, objects))
    det = oracle_detector(oracle, tiny_config, tiny_names, tile=spec, batch_size=5)
    oracle.calls.clear()
    got = det(images)
    windows = sum(len(image_windows(*im.shape[1:], spec)) for im in images)
    assert sum(oracle.calls) == windows and all(c == 5 for c in oracle.calls[:-1])  # full batches across images
    for im, res in zip(images, got):
        ref = reference_tiled(det, im, spec)
        assert torch.equal(res["labels"], ref["labels"]) and torch.equal(res["scores"], ref["scores"])
        assert torch.allclose(res["boxes"], ref["boxes"], atol=1e-4)


@pytest.mark.parametrize("overlap", [0.0, 0.5])
def test_overlap_zero_and_half_find_each_object_once(oracle, tiny_config, tiny_names, overlap):
    # 777 x 1013 (not multiples of anything); objects on window edges and in the corners
    objects = [(0, (240, 240, 280, 275)), (1, (0, 0, 30, 30)), (2, (980, 740, 1013, 777))]
    spec = TileSpec(size=256, overlap=overlap, merge="greedy_nmm", match="ios")
    res = oracle_detector(oracle, tiny_config, tiny_names, tile=spec)(scene(777, 1013, objects))
    assert sorted(res["labels"].tolist()) == [0, 1, 2]
    for label, box in objects:
        k = res["labels"].tolist().index(label)
        assert torch.allclose(res["boxes"][k], torch.tensor(box, dtype=torch.float32), atol=2.0)


def test_full_image_pass_finds_an_object_larger_than_the_windows(oracle, tiny_config, tiny_names):
    objects = [(0, (100, 150, 900, 550))]  # 800 x 400 px: larger than the 256 px windows
    image = scene(600, 1000, objects)
    spec = TileSpec(size=256, overlap=0.2, full_image=True)
    oracle.calls.clear()
    res = oracle_detector(oracle, tiny_config, tiny_names, tile=spec)(image)
    assert sum(oracle.calls) == len(image_windows(600, 1000, spec)) == 5 * 3 + 1
    assert len(res["boxes"]) == 1
    assert torch.allclose(res["boxes"][0], torch.tensor(objects[0][1], dtype=torch.float32), atol=4.0)


def test_max_detections_per_image_after_merging(tiny_model, tiny_config, tiny_names):
    image = torch.randint(0, 256, (3, 600, 700), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    det = Detector(tiny_model, tiny_config, tiny_names, preset="evaluate", max_detections=30,
                   tile=TileSpec(size=256))
    res = det(image)
    assert len(res["boxes"]) == 30
    assert (res["scores"][:-1] >= res["scores"][1:]).all()
    assert (res["boxes"][:, 2] <= 700).all() and (res["boxes"][:, 3] <= 600).all() and (res["boxes"] >= 0).all()


class _Background(nn.Module):
    """Background everywhere, cheap: for counting what the tiled loop builds."""

    def __init__(self, config) -> None:
        super().__init__()
        self.anchors, self.num_classes = SSDBoxCoder(config).default_boxes.shape[0], config.num_classes

    def forward(self, x):
        logits = torch.zeros(x.shape[0], self.anchors, self.num_classes)
        logits[..., 0] = 10
        return torch.zeros(x.shape[0], self.anchors, 4), logits


def test_an_8000_pixel_image_streams_in_bounded_batches(tiny_config, tiny_names, monkeypatch):
    import ssdkit.tiling as tiling

    built = []
    real = tiling.resize_batch

    def counting(crops, size):
        built.append(len(crops))
        return real(crops, size)

    monkeypatch.setattr(tiling, "resize_batch", counting)
    image = torch.zeros(3, 8000, 8000, dtype=torch.uint8)
    image[:, 4000:4030, 4100:4160] = 255
    spec = TileSpec(size=1024, overlap=0.2)
    det = Detector(_Background(tiny_config), tiny_config, tiny_names, tile=spec, batch_size=4, channels_last=False)
    res = det(image)
    assert len(res["boxes"]) == 0
    assert sum(built) == len(image_windows(8000, 8000, spec)) == 100
    assert max(built) == 4  # never more than one batch of resized windows


def test_tile_argument_is_checked(tiny_model, tiny_config, tiny_names):
    with pytest.raises(SSDKitError, match="^tile: expected a TileSpec"):
        Detector(tiny_model, tiny_config, tiny_names, tile=512)


def test_from_checkpoint_takes_a_tile_spec(tiny_checkpoint):
    det = Detector.from_checkpoint(tiny_checkpoint, device="cpu", tile=TileSpec(size=128))
    assert det.tile == TileSpec(size=128)
    res = det([torch.zeros(3, 200, 300, dtype=torch.uint8), np.zeros((90, 60, 3), np.uint8)])
    assert len(res) == 2 and all(r["boxes"].shape[1] == 4 for r in res)


def test_window_to_image_is_used_for_every_window(tiny_config):
    # the mapping of a whole batch at once equals window by window
    wins = torch.tensor([[0, 0, 256, 256], [205, 0, 461, 256], [944, 615, 1200, 871]])
    boxes = torch.rand(3, 5, 4) * 300
    per = torch.cat([window_to_image(boxes[k], wins[k], 300) for k in range(3)])
    assert torch.equal(window_to_image(boxes.reshape(-1, 4), wins.repeat_interleave(5, 0), 300), per)
