"""ssdkit.postprocess (through SSDBoxCoder's wrappers) against torchvision's SSD postprocess and per-class NMS."""

import inspect

import pytest
import torch
from torch.nn import functional as F
from torchvision import ops

from ssdkit import SSDBoxCoder
from ssdkit.choices import DECODE_PRESETS
from ssdkit.config import ssd300_config
from ssdkit.postprocess import PaddedDecoder, _grouped_nms, class_probs, decode_offsets


@pytest.fixture(scope="module")
def coder():
    return SSDBoxCoder(ssd300_config(num_classes=6))


def random_head(seed, n, classes=6, background=0.0):
    gen = torch.Generator().manual_seed(seed)
    loc = torch.randn(n, 8732, 4, generator=gen) * 0.5
    logits = torch.randn(n, 8732, classes, generator=gen) * 2
    logits[..., 0] += background
    return loc, logits


def reference_decode_batch(coder, loc, logits, score_thresh, nms_thresh, top_k, max_det):
    """torchvision SSD postprocess style: per image, per class top-k + threshold, NMS per class, cut."""
    out = []
    for i in range(loc.shape[0]):
        boxes = coder.decode_boxes(loc[i]).clamp(0, 300)
        # the class softmax as ssdkit computes it (equal to softmax(dim=-1) to 1 ulp, tested in
        # test_class_probs_is_the_softmax_over_classes): the detection sets compared here are exact
        scores = class_probs(logits[i][None])[0]
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


def _as_set(det):
    """Detections keyed by (label, score, box): equal scores may come in either order."""
    return sorted(zip(det["labels"].tolist(), det["scores"].tolist(), map(tuple, det["boxes"].tolist())))


@pytest.mark.parametrize("classes", [2, 7, 21])
def test_class_probs_is_the_softmax_over_classes(classes):
    logits = torch.randn(3, 8732, classes, generator=torch.Generator().manual_seed(classes)) * 8
    got = class_probs(logits)
    assert got.shape == logits.shape and got.dtype == torch.float32
    torch.testing.assert_close(got, F.softmax(logits, dim=-1), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(got.sum(-1), torch.ones(3, 8732))


def test_defaults_are_the_presets(coder):
    batch = inspect.signature(coder.decode_batch).parameters
    assert {k: batch[k].default for k in DECODE_PRESETS["evaluate"]} == DECODE_PRESETS["evaluate"]
    one = inspect.signature(coder.decode).parameters
    assert (one["score_thresh"].default, one["nms_thresh"].default) == (0.6, 0.45)  # the notebook's
    assert {k: one[k].default for k in ("score_thresh", "nms_thresh")} == {
        k: DECODE_PRESETS["visualize"][k] for k in ("score_thresh", "nms_thresh")}


def test_decode_offsets_inverts_the_encoding_and_caps_the_scale():
    d_xy, d_wh = torch.tensor([[50.0, 60.0]]), torch.tensor([[20.0, 40.0]])
    loc = torch.tensor([[[0.0, 0.0, 0.0, 0.0], [1.0, -2.0, 5.0, -5.0], [0.0, 0.0, 1e4, 0.0]]])  # [1, 3, 4]
    boxes = decode_offsets(loc, d_xy, d_wh, (0.1, 0.2))
    assert boxes.shape == (1, 3, 4)
    assert boxes[0, 0].tolist() == [40.0, 40.0, 60.0, 80.0]  # zero offsets: the default box itself
    w, h = 20.0 * torch.exp(torch.tensor(1.0)), 40.0 * torch.exp(torch.tensor(-1.0))
    expected = torch.tensor([52.0 - w / 2, 52.0 - h / 2, 52.0 + w / 2, 52.0 + h / 2])
    assert torch.allclose(boxes[0, 1], expected, atol=1e-4)
    assert torch.isfinite(boxes).all() and float(boxes[0, 2, 2] - boxes[0, 2, 0]) == pytest.approx(20 * 1000 / 16)


@pytest.mark.parametrize("score_thresh, top_k, max_det", [(0.01, 200, 200), (0.3, 50, 20), (0.99, 200, 200)])
def test_decode_batch_equals_per_image_reference(coder, score_thresh, top_k, max_det):
    loc, logits = random_head(2, 3)
    got = coder.decode_batch(loc, logits, score_thresh=score_thresh, top_k=top_k, max_detections=max_det)
    ref = reference_decode_batch(coder, loc, logits, score_thresh, 0.45, top_k, max_det)
    for g, r in zip(got, ref):
        assert len(g["scores"]) == len(r["scores"]) <= max_det
        assert _as_set(g) == _as_set(r)
        assert torch.all(g["scores"][:-1] >= g["scores"][1:])


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


def test_decode_batch_equals_torchvision_postprocess():
    from torchvision.models.detection import ssd300_vgg16

    loc, logits = random_head(7, 2, classes=21)
    coder_21 = SSDBoxCoder(ssd300_config(num_classes=21))
    tv = ssd300_vgg16(weights=None, weights_backbone=None, num_classes=21)
    tv.topk_candidates = 200
    anchors = ops.box_convert(coder_21.default_boxes, "cxcywh", "xyxy")
    with torch.no_grad():
        ref = tv.postprocess_detections({"bbox_regression": loc, "cls_logits": logits}, [anchors] * 2,
                                        [(300, 300)] * 2)
    got = coder_21.decode_batch(loc, logits, score_thresh=0.01, nms_thresh=0.45, top_k=200, max_detections=200)
    for g, r in zip(got, ref):
        assert len(g["scores"]) == len(r["scores"]) == 200
        assert torch.equal(g["labels"] + 1, r["labels"])  # torchvision counts background as label 0
        assert torch.allclose(g["scores"], r["scores"], atol=1e-6)
        assert torch.allclose(g["boxes"], r["boxes"], atol=1e-3)


@pytest.mark.parametrize("settings", [DECODE_PRESETS["evaluate"], dict(score_thresh=0.3, nms_thresh=0.5, top_k=50,
                                                                        max_detections=20)])
def test_padded_decoder_equals_decode_batch(coder, settings):
    """The export graph's decoder (eager, float64-offset NMS) keeps the same detections as decode_batch."""
    loc, logits = random_head(8, 3, background=1.0)
    with torch.no_grad():
        boxes, scores, labels, count = PaddedDecoder(coder, **settings)(loc, logits)
    d = settings["max_detections"]
    assert boxes.shape == (3, d, 4) and scores.shape == labels.shape == (3, d) and count.shape == (3,)
    ref = coder.decode_batch(loc, logits, **settings)
    for i, r in enumerate(ref):
        k = int(count[i])
        assert k == len(r["scores"])
        got = {"boxes": boxes[i, :k], "scores": scores[i, :k], "labels": labels[i, :k]}
        assert _as_set(got) == _as_set(r)  # boxes too, bit for bit: the same decode_offsets
        assert torch.all(scores[i, k:] == 0) and torch.all(labels[i, k:] == -1) and torch.all(boxes[i, k:] == 0)


@pytest.mark.parametrize("per_group", [5, 300])  # the vectorized path and the per-slice ops.nms path
def test_grouped_nms_keeps_what_batched_nms_keeps(per_group):
    gen = torch.Generator().manual_seed(9)
    k = 12 * per_group
    xy = torch.rand(k, 2, generator=gen) * 200
    boxes = torch.cat([xy, xy + torch.rand(k, 2, generator=gen) * 60 + 1], 1)
    scores = torch.rand(k, generator=gen)
    group = torch.sort(torch.randint(0, 12, (k,), generator=gen)).values  # non-decreasing, as decode gives
    got = _grouped_nms(boxes, scores, group, 12, 0.45)
    assert sorted(got.tolist()) == sorted(ops.batched_nms(boxes, scores, group, 0.45).tolist())


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
    with pytest.raises(ValueError, match="cls_preds"):
        coder.decode(torch.zeros(8732, 4), torch.zeros(8732, 1))
    with pytest.raises(ValueError, match="loc_preds"):
        coder.decode_batch(torch.zeros(1, 10, 4), torch.zeros(1, 10, 6))
    with pytest.raises(ValueError, match="cls_logits"):
        coder.decode_batch(torch.zeros(1, 8732, 4), torch.zeros(2, 8732, 6))
