"""SSDLoss against its formula, written as a plain loop."""

import torch
from torch.nn import functional as F

from ssdkit.loss import SSDLoss


def reference_loss(loc_p, loc_t, cls_p, cls_t, ratio=3):
    n = cls_t.shape[0]
    total_pos = int((cls_t > 0).sum())
    loc_sum, cls_sum = 0.0, 0.0
    for i in range(n):
        pos = cls_t[i] > 0
        for a in pos.nonzero().flatten().tolist():
            for k in range(4):
                d = abs(float(loc_p[i, a, k] - loc_t[i, a, k]))
                loc_sum += 0.5 * d * d if d < 1 else d - 0.5
            cls_sum += float(F.cross_entropy(cls_p[i, a][None], cls_t[i, a][None]))
        negs = [(float(F.cross_entropy(cls_p[i, a][None], torch.tensor([0]))), a)
                for a in range(cls_t.shape[1]) if cls_t[i, a] == 0]
        negs.sort(reverse=True)
        for v, _ in negs[: ratio * int(pos.sum())]:
            cls_sum += v
    d = max(1, total_pos)
    return loc_sum / d, cls_sum / d


def make_case(seed, n=3, a=40, c=4, empty_images=()):
    g = torch.Generator().manual_seed(seed)
    loc_p = torch.randn(n, a, 4, generator=g)
    loc_t = torch.randn(n, a, 4, generator=g) * 2
    cls_p = torch.randn(n, a, c, generator=g)
    cls_t = torch.randint(0, c, (n, a), generator=g)
    cls_t[torch.rand(n, a, generator=g) < 0.6] = 0
    cls_t[torch.rand(n, a, generator=g) < 0.1] = -1
    for i in empty_images:
        cls_t[i] = 0
    return loc_p, loc_t, cls_p, cls_t


def test_loss_equals_formula():
    for seed in range(3):
        loc_p, loc_t, cls_p, cls_t = make_case(seed, empty_images=(1,))
        out = SSDLoss(4)(loc_p, loc_t, cls_p, cls_t)
        ref_loc, ref_cls = reference_loss(loc_p, loc_t, cls_p, cls_t)
        assert abs(out.loc_loss.item() - ref_loc) < 1e-4
        assert abs(out.cls_loss.item() - ref_cls) < 1e-4
        assert abs(out.loss.item() - (ref_loc + ref_cls)) < 1e-4
        assert out.num_pos.item() == int((cls_t > 0).sum())


def test_hand_made_case():
    # one image, 4 default boxes: one positive (class 1), three negatives; ratio 3 takes all negatives
    loc_p = torch.zeros(1, 4, 4)
    loc_t = torch.zeros(1, 4, 4)
    loc_t[0, 0] = torch.tensor([2.0, 0.5, 0.0, 0.0])  # smooth L1: 1.5 + 0.125
    cls_p = torch.zeros(1, 4, 2)  # uniform: CE = log 2 everywhere
    cls_t = torch.tensor([[1, 0, 0, 0]])
    out = SSDLoss(2)(loc_p, loc_t, cls_p, cls_t)
    assert abs(out.loc_loss.item() - 1.625) < 1e-6
    assert abs(out.cls_loss.item() - 4 * torch.log(torch.tensor(2.0)).item()) < 1e-6
    # ratio 1 keeps only the single hardest negative
    cls_p2 = cls_p.clone()
    cls_p2[0, 2, 1] = 3.0  # box 2 looks like an object: the hardest negative
    out1 = SSDLoss(2, neg_pos_ratio=1)(loc_p, loc_t, cls_p2, cls_t)
    expected = (F.cross_entropy(cls_p2[0, 0][None], torch.tensor([1])) +
                F.cross_entropy(cls_p2[0, 2][None], torch.tensor([0]))).item()
    assert abs(out1.cls_loss.item() - expected) < 1e-6


def test_no_positive_gives_finite_loss_and_gradients():
    loc_p = torch.randn(2, 30, 4, requires_grad=True)
    cls_p = torch.randn(2, 30, 3, requires_grad=True)
    out = SSDLoss(3)(loc_p, torch.zeros(2, 30, 4), cls_p, torch.zeros(2, 30, dtype=torch.long))
    assert torch.isfinite(out.loss) and out.loss.item() == 0.0
    out.loss.backward()
    assert torch.isfinite(loc_p.grad).all() and torch.isfinite(cls_p.grad).all()


def test_ignored_boxes_do_not_count():
    loc_p, loc_t, cls_p, cls_t = make_case(5)
    base = SSDLoss(4)(loc_p, loc_t, cls_p, cls_t)
    # changing predictions at ignored default boxes changes nothing
    cls_p2 = cls_p.clone()
    cls_p2[cls_t == -1] += 100.0
    loc_p2 = loc_p.clone()
    loc_p2[cls_t == -1] += 100.0
    again = SSDLoss(4)(loc_p2, loc_t, cls_p2, cls_t)
    assert torch.allclose(base.loss, again.loss)


def test_gradients_flow_to_positives_and_mined_negatives():
    loc_p, loc_t, cls_p, cls_t = make_case(7, n=1, a=20)
    cls_p.requires_grad_(True)
    SSDLoss(4)(loc_p, loc_t, cls_p, cls_t).loss.backward()
    touched = cls_p.grad.abs().sum(-1) > 0
    assert torch.all(touched[cls_t > 0])
    assert int(touched[cls_t == 0].sum()) == min(3 * int((cls_t > 0).sum()), int((cls_t == 0).sum()))
