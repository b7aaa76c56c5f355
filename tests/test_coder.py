"""SSDBoxCoder against plain reference implementations (the notebook's loops, torchvision's per-class NMS)."""

import pytest
import torch
from torch.nn import functional as F
from torchvision import ops

from ssdkit import SSDBoxCoder
from ssdkit.boxes import change_box_order
from ssdkit.config import small_objects_config, ssd300_config, ssd512_config
from ssdkit.reference import notebook_encode, torchcv_encode


@pytest.fixture(scope="module")
def coder():
    return SSDBoxCoder(ssd300_config(num_classes=6))


def reference_encode(coder, boxes, labels):
    return notebook_encode(coder.default_boxes, boxes, labels)


def random_scene(gen, m, size=300):
    if m == 0:
        return torch.zeros(0, 4), torch.zeros(0, dtype=torch.long)
    xy = torch.rand(m, 2, generator=gen) * size
    wh = torch.rand(m, 2, generator=gen) ** 2 * size * 0.6 + 1
    boxes = torch.cat([xy, (xy + wh).clamp(max=size)], 1)
    boxes[:, 2:] = torch.maximum(boxes[:, 2:], boxes[:, :2] + 1)
    labels = torch.randint(0, 5, (m,), generator=gen)
    return boxes, labels


def special_scenes():
    yield torch.tensor([[0.0, 0.0, 1.0, 1.0], [299.0, 299.0, 300.0, 300.0]]), torch.tensor([0, 1])  # tiny, corners
    yield torch.tensor([[0.0, 0.0, 300.0, 300.0]]), torch.tensor([4])  # whole image
    yield torch.tensor([[10.0, 10.0, 40.0, 40.0]] * 3), torch.tensor([0, 1, 2])  # identical boxes: collisions
    yield torch.tensor([[100.0, 100.0, 130.0, 130.0], [101.0, 100.0, 131.0, 130.0]]), torch.tensor([3, 3])
    yield torch.zeros(0, 4), torch.zeros(0, dtype=torch.long)  # empty image


def test_encode_batch_equals_reference_on_random_scenes(coder):
    gen = torch.Generator().manual_seed(0)
    scenes = [random_scene(gen, m) for m in (0, 1, 3, 8, 55, 2, 0, 17)] + list(special_scenes())
    boxes = [s[0] for s in scenes]
    labels = [s[1] for s in scenes]
    loc, cls = coder.encode_batch(boxes, labels)
    assert loc.shape == (len(scenes), 8732, 4) and cls.shape == (len(scenes), 8732)
    for i, (b, lab) in enumerate(scenes):
        ref_loc, ref_cls = reference_encode(coder, b, lab)
        assert torch.equal(cls[i], ref_cls), f"scene {i}"
        pos = ref_cls > 0
        assert torch.allclose(loc[i][pos], ref_loc[pos], atol=1e-5), f"scene {i}"
        if len(b):
            # every object that overlaps any default box is matched at least once (no object lost)
            assert len(torch.unique(ref_cls[pos])) <= len(torch.unique(lab))
        one_loc, one_cls = coder.encode(b, lab)
        assert torch.equal(one_cls, cls[i]) and torch.equal(one_loc, loc[i])


def test_encode_equals_torchcvs_own_encode(coder):
    """The coder the notebook imports (torchcv's ``SSDBoxCoder.encode``, kept line for line in reference.py)."""
    gen = torch.Generator().manual_seed(11)
    for m in (1, 4, 12, 40):
        boxes, labels = random_scene(gen, m)
        ref_loc, ref_cls = torchcv_encode(coder.default_boxes, boxes, labels)
        loc, cls = coder.encode(boxes, labels)
        assert torch.equal(cls, ref_cls)
        assert torch.equal(loc, ref_loc)


def test_every_object_gets_a_default_box_even_when_best_boxes_collide(coder):
    boxes = torch.tensor([[10.0, 10.0, 40.0, 40.0]] * 4)
    _, cls = coder.encode(boxes, torch.tensor([0, 1, 2, 3]))
    assert set(cls[cls > 0].tolist()) == {1, 2, 3, 4}


def test_empty_image_is_all_background(coder):
    loc, cls = coder.encode(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))
    assert torch.all(cls == 0) and torch.all(loc == 0)


def test_ignored_objects_mark_default_boxes_minus_one(coder):
    boxes = torch.tensor([[10.0, 10.0, 60.0, 60.0], [150.0, 150.0, 250.0, 250.0]])
    loc, cls = coder.encode(boxes, torch.tensor([0, 1]), ignore=torch.tensor([False, True]))
    assert (cls == 1).sum() >= 1
    assert (cls == 2).sum() == 0  # the ignored object is never a positive
    assert (cls == -1).sum() > 0
    ious = ops.box_iou(change_box_order(coder.default_boxes, "xywh2xyxy"), boxes[1:])[:, 0]
    assert torch.all(ious[cls == -1] >= 0.5)


@pytest.mark.parametrize(
    "boxes, labels, match",
    [
        (torch.tensor([[5.0, 5.0, 1.0, 10.0]]), torch.tensor([0]), "inverted"),
        (torch.tensor([[float("nan"), 5.0, 10.0, 10.0]]), torch.tensor([0]), "non-finite"),
        (torch.tensor([[1, 1, 5, 5]]), torch.tensor([0]), "float"),
        (torch.tensor([1.0, 1.0, 5.0, 5.0]), torch.tensor([0]), r"shape \[M, 4\]"),
        (torch.tensor([[1.0, 1.0, 5.0, 5.0]]), torch.tensor([9]), "labels"),
        (torch.tensor([[1.0, 1.0, 5.0, 5.0]]), torch.tensor([0.0]), "integer"),
    ],
)
def test_encode_rejects_bad_input(coder, boxes, labels, match):
    with pytest.raises(ValueError, match=match):
        coder.encode(boxes, labels)


def test_encode_decode_round_trip(coder):
    gen = torch.Generator().manual_seed(1)
    boxes, labels = random_scene(gen, 10)
    loc, cls = coder.encode(boxes, labels)
    decoded = coder.decode_boxes(loc)
    pos = cls > 0
    # positives decode back to the box they were matched to
    ref_loc, _ = reference_encode(coder, boxes, labels)
    assert torch.allclose(decoded[pos], coder.decode_boxes(ref_loc)[pos], atol=1e-3)
    ious = ops.box_iou(decoded[pos], boxes).max(1).values
    assert torch.all(ious > 0.999)


def reference_decode_batch(coder, loc, logits, score_thresh, nms_thresh, top_k, max_det):
    """torchvision SSD postprocess style: per image, per class top-k + threshold, NMS per class, cut."""
    out = []
    for i in range(loc.shape[0]):
        boxes = coder.decode_boxes(loc[i]).clamp(0, 300)
        scores = F.softmax(logits[i], -1)
        all_b, all_s, all_l = [], [], []
        for c in range(1, scores.shape[1]):
            s = scores[:, c]
            keep = s > score_thresh
            s, b = s[keep], boxes[keep]
            s, idx = s.topk(min(top_k, len(s)))
            b = b[idx]
            k = ops.nms(b, s, nms_thresh)
            all_b.append(b[k])
            all_s.append(s[k])
            all_l.append(torch.full((len(k),), c - 1))
        b, s, lab = torch.cat(all_b), torch.cat(all_s), torch.cat(all_l)
        order = s.argsort(descending=True, stable=True)[:max_det]
        out.append({"boxes": b[order], "scores": s[order], "labels": lab[order]})
    return out


@pytest.mark.parametrize("score_thresh, top_k, max_det", [(0.01, 200, 200), (0.3, 50, 20), (0.99, 200, 200)])
def test_decode_batch_equals_per_image_reference(coder, score_thresh, top_k, max_det):
    gen = torch.Generator().manual_seed(2)
    loc = torch.randn(3, 8732, 4, generator=gen) * 0.5
    logits = torch.randn(3, 8732, 6, generator=gen) * 2
    got = coder.decode_batch(loc, logits, score_thresh=score_thresh, top_k=top_k, max_detections=max_det)
    ref = reference_decode_batch(coder, loc, logits, score_thresh, 0.45, top_k, max_det)
    for g, r in zip(got, ref):
        assert len(g["scores"]) == len(r["scores"]) <= max_det
        # compare as sets keyed by (label, score) since equal scores may order differently
        gk = sorted(zip(g["labels"].tolist(), g["scores"].tolist(), map(tuple, g["boxes"].tolist())))
        rk = sorted(zip(r["labels"].tolist(), r["scores"].tolist(), map(tuple, r["boxes"].tolist())))
        assert gk == rk
        assert torch.all(g["scores"][:-1] >= g["scores"][1:])


def _as_set(det):
    return sorted(zip(det["labels"].tolist(), det["scores"].tolist(), map(tuple, det["boxes"].tolist())))


@pytest.mark.parametrize("max_det", [1, 5, 200])
def test_decode_batch_with_heavy_suppression_needs_more_than_the_first_prefix(coder, max_det):
    """Trained-model-like outputs: a few objects, each scored high by many overlapping default boxes, so most
    high-scoring candidates are suppressed and the first prefix of candidates cannot fill max_detections."""
    gen = torch.Generator().manual_seed(5)
    loc = torch.zeros(2, 8732, 4)  # every prediction = its default box: neighbours overlap heavily
    logits = torch.randn(2, 8732, 6, generator=gen) - 4.0
    logits[..., 0] += 6.0
    big = coder.default_boxes[:, 2] > 100  # large default boxes overlap each other
    logits[0, big, 3] += 12.0 + torch.rand(int(big.sum()), generator=gen)
    logits[1, :, 2] += torch.rand(8732, generator=gen) * 8  # image 1: one class everywhere
    got = coder.decode_batch(loc, logits, score_thresh=0.01, top_k=200, max_detections=max_det)
    ref = reference_decode_batch(coder, loc, logits, 0.01, 0.45, 200, max_det)
    for g, r in zip(got, ref):
        assert len(g["scores"]) == len(r["scores"])
        assert _as_set(g) == _as_set(r)


def test_decode_batch_equals_torchvision_postprocess(coder):
    from torchvision.models.detection import ssd300_vgg16

    gen = torch.Generator().manual_seed(7)
    loc = torch.randn(2, 8732, 4, generator=gen) * 0.5
    logits = torch.randn(2, 8732, 21, generator=gen) * 2
    tv = ssd300_vgg16(weights=None, weights_backbone=None, num_classes=21)
    tv.topk_candidates = 200
    anchors = ops.box_convert(coder.default_boxes, "cxcywh", "xyxy")
    with torch.no_grad():
        ref = tv.postprocess_detections({"bbox_regression": loc, "cls_logits": logits}, [anchors] * 2,
                                        [(300, 300)] * 2)
    coder_21 = SSDBoxCoder(ssd300_config(num_classes=21))
    got = coder_21.decode_batch(loc, logits, score_thresh=0.01, nms_thresh=0.45, top_k=200, max_detections=200)
    for g, r in zip(got, ref):
        assert len(g["scores"]) == len(r["scores"]) == 200
        assert torch.equal(g["labels"] + 1, r["labels"])  # torchvision counts background as label 0
        assert torch.allclose(g["scores"], r["scores"], atol=1e-6)
        assert torch.allclose(g["boxes"], r["boxes"], atol=1e-3)


def test_decode_batch_on_an_encoded_scene_recovers_it(coder):
    boxes = torch.tensor([[20.0, 30.0, 80.0, 120.0], [150.0, 140.0, 290.0, 260.0]])
    labels = torch.tensor([2, 4])
    loc, cls = coder.encode(boxes, labels)
    logits = torch.full((8732, 6), -10.0)
    logits[torch.arange(8732), cls] = 10.0
    det = coder.decode_batch(loc[None], logits[None], score_thresh=0.5)[0]
    assert sorted(det["labels"].tolist()) == [2, 4]
    order = det["labels"].argsort()
    assert torch.allclose(det["boxes"][order], boxes, atol=1e-3)


def test_decode_with_nothing_above_threshold_is_empty(coder):
    boxes, labels, scores = coder.decode(torch.zeros(8732, 4), torch.zeros(8732, 6), score_thresh=0.5)
    assert boxes.shape == (0, 4) and labels.shape == (0,) and scores.shape == (0,)
    det = coder.decode_batch(torch.zeros(2, 8732, 4), torch.zeros(2, 8732, 6), score_thresh=0.5)
    assert [len(d["scores"]) for d in det] == [0, 0]


def test_decode_rejects_wrong_shapes(coder):
    with pytest.raises(ValueError, match="loc_preds"):
        coder.decode(torch.zeros(10, 4), torch.zeros(10, 6))
    with pytest.raises(ValueError, match="cls_logits"):
        coder.decode_batch(torch.zeros(1, 8732, 4), torch.zeros(2, 8732, 6))


def dense_reference_encode(coder, boxes, labels, ignore):
    """The notebook's matching written out densely over all default boxes, with ignored objects (-1 marks)."""
    ious = ops.box_iou(change_box_order(coder.default_boxes, "xywh2xyxy"), boxes)  # [A, M]
    match = ious.clone()
    match[:, ignore] = -1.0
    index = torch.full((len(ious),), -1, dtype=torch.long)
    work = match.clone()
    for _ in range(len(boxes)):  # greedy bipartite: the highest remaining IoU first, first maximum on ties
        flat = int(work.argmax())
        a, o = divmod(flat, len(boxes))
        if work[a, o] < 1e-6:
            break
        index[a] = o
        work[a, :] = -1.0
        work[:, o] = -1.0
    best_iou, best_obj = match.max(1)
    thresh = (index < 0) & (best_iou >= 0.5)
    index[thresh] = best_obj[thresh]
    cls = labels[index.clamp(min=0)] + 1
    cls[index < 0] = 0
    if ignore.any():
        cls[(index < 0) & (ious[:, ignore].max(1).values >= 0.5)] = -1
    return index, cls


def hard_scene(gen, m, size):
    """Objects of every scale, some tiny, some zero-width, some off the image, some duplicated, some aligned with
    the default-box grid (exact ties)."""
    xy = torch.rand(m, 2, generator=gen) * size * 1.2 - size * 0.1
    wh = torch.rand(m, 2, generator=gen) ** 3 * size + torch.rand(m, 2, generator=gen)
    boxes = torch.cat([xy, xy + wh], 1)
    boxes[::7, 2] = boxes[::7, 0]  # zero width
    if m >= 4:
        boxes[3] = boxes[1]  # a duplicate: the two collide on their best default box
    boxes[::5] = (boxes[::5] / 8).round() * 8  # on the step-8 grid
    labels = torch.randint(0, 5, (m,), generator=gen)
    ignore = torch.rand(m, generator=gen) < 0.15
    return boxes, labels, ignore


@pytest.mark.parametrize("cfg", [
    ssd300_config(num_classes=6),
    ssd300_config(num_classes=6, clip_default_boxes=True, clip_default_box_centers=True),  # uneven centre grid
    small_objects_config(num_classes=6),
    ssd512_config(num_classes=6),
], ids=["ssd300", "ssd300-clipped", "ssd300-small", "ssd512"])
def test_encode_batch_equals_a_dense_reference_on_hard_scenes(cfg):
    """encode_batch computes IoUs only for a candidate set of default boxes per object: it must pick exactly the
    matches a dense computation over all default boxes picks, for every kind of object and config."""
    coder = SSDBoxCoder(cfg)
    gen = torch.Generator().manual_seed(5)
    scenes = [hard_scene(gen, m, cfg.input_size) for m in (1, 2, 4, 9, 30, 70)]
    loc, cls = coder.encode_batch([s[0] for s in scenes], [s[1] for s in scenes], [s[2] for s in scenes])
    anchors = change_box_order(change_box_order(coder.default_boxes, "xywh2xyxy"), "xyxy2xywh")
    for i, (boxes, labels, ignore) in enumerate(scenes):
        index, ref_cls = dense_reference_encode(coder, boxes, labels, ignore)
        assert torch.equal(cls[i], ref_cls), f"scene {i}"
        pos = ref_cls > 0
        xywh = change_box_order(boxes[index[pos]], "xyxy2xywh")
        v0, v1 = coder.variances
        ref_loc = torch.cat([(xywh[:, :2] - anchors[pos, :2]) / anchors[pos, 2:] / v0,
                             torch.log(xywh[:, 2:] / anchors[pos, 2:]) / v1], 1)
        assert torch.allclose(loc[i][pos], ref_loc, atol=1e-5), f"scene {i}"
        # alone (no padding) and in the padded batch: the same targets, bit for bit
        one_loc, one_cls = coder.encode(boxes, labels, ignore)
        assert torch.equal(one_cls, cls[i]) and torch.equal(one_loc, loc[i]), f"scene {i}"


def test_encode_batch_with_no_matchable_object_is_all_background(coder):
    """Zero-width and off-image objects overlap no default box: no candidates at all, nothing matched."""
    boxes = [torch.tensor([[10.0, 10.0, 10.0, 50.0]]), torch.tensor([[-500.0, -500.0, -400.0, -400.0]])]
    loc, cls = coder.encode_batch(boxes, [torch.tensor([1]), torch.tensor([2])])
    assert torch.equal(cls, torch.zeros_like(cls)) and torch.isfinite(loc).all()
    ref_loc, ref_cls = torchcv_encode(coder.default_boxes, boxes[1], torch.tensor([2]))
    assert torch.equal(cls[1], ref_cls) and torch.equal(loc[1], ref_loc)
