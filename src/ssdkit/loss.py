"""SSDLoss: smooth L1 on positive default boxes + cross-entropy with hard negative mining (SSD paper, eq. 1).

    L = (L_loc + L_conf) / max(1, N_pos)
    L_loc  = sum over positives of smooth_L1(loc_pred - loc_target)          (beta = 1)
    L_conf = sum over positives and the hardest negatives of cross-entropy   (neg_pos_ratio negatives per positive,
                                                                               chosen per image by their CE loss)

``N_pos`` counts positives over the whole batch. Default boxes labelled -1 (ignore) are neither positive nor
negative. A batch without any positive gives a finite loss (0 from classification, since no negative is mined).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F


class SSDLossOutput(NamedTuple):
    """``loss = loc_loss + cls_loss``; all 0-dim tensors, already divided by ``max(1, N_pos)``."""

    loss: torch.Tensor
    loc_loss: torch.Tensor
    cls_loss: torch.Tensor
    num_pos: torch.Tensor


class SSDLoss(nn.Module):
    """SSD multibox loss.

    Args:
        num_classes: number of classes including background (the model's ``num_classes``).
        neg_pos_ratio: hard negatives kept per positive, per image (3 in the paper).
        loc_weight: weight of the localisation term (alpha in the paper, 1).
    """

    def __init__(self, num_classes: int, neg_pos_ratio: int = 3, loc_weight: float = 1.0) -> None:
        super().__init__()
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes: must be an integer >= 2 (background + 1), got {num_classes!r}")
        if neg_pos_ratio < 0:
            raise ValueError(f"neg_pos_ratio: must be >= 0, got {neg_pos_ratio!r}")
        self.num_classes = num_classes
        self.neg_pos_ratio = neg_pos_ratio
        self.loc_weight = loc_weight

    def forward(
        self,
        loc_preds: torch.Tensor,
        loc_targets: torch.Tensor,
        cls_preds: torch.Tensor,
        cls_targets: torch.Tensor,
    ) -> SSDLossOutput:
        """Args:
            loc_preds, loc_targets: ``Tensor[N, A, 4]``.
            cls_preds: ``Tensor[N, A, C]`` raw logits.
            cls_targets: ``Tensor[N, A]`` int64: 0 background, 1..C-1 classes, -1 ignore.
        """
        n, a = cls_targets.shape
        if loc_preds.shape != (n, a, 4) or loc_targets.shape != (n, a, 4):
            raise ValueError(
                f"loc_preds/loc_targets: expected shape [{n}, {a}, 4], got {list(loc_preds.shape)} / "
                f"{list(loc_targets.shape)}"
            )
        if cls_preds.shape != (n, a, self.num_classes):
            raise ValueError(f"cls_preds: expected shape [{n}, {a}, {self.num_classes}], got {list(cls_preds.shape)}")
        pos = cls_targets > 0
        neg_candidates = cls_targets == 0
        num_pos_img = pos.sum(1)
        num_pos = num_pos_img.sum()
        denom = num_pos.clamp(min=1).to(loc_preds.dtype)

        # Boolean indexing, not multiplication by a mask: unmatched rows of loc_targets are meaningless.
        loc_loss = F.smooth_l1_loss(loc_preds[pos].float(), loc_targets[pos].float(), reduction="sum")

        ce = F.cross_entropy(
            cls_preds.reshape(-1, self.num_classes).float(), cls_targets.clamp(min=0).reshape(-1), reduction="none"
        ).view(n, a)
        pos_loss = ce[pos].sum()
        # Hard negatives: per image, the neg_pos_ratio * N_pos highest-loss background boxes.
        num_neg = torch.minimum(self.neg_pos_ratio * num_pos_img, neg_candidates.sum(1))  # [N]
        neg_ce = torch.where(neg_candidates, ce, torch.full_like(ce, -1.0))
        sorted_neg, _ = neg_ce.sort(dim=1, descending=True)
        take = torch.arange(a, device=ce.device)[None, :] < num_neg[:, None]
        neg_loss = torch.where(take, sorted_neg, torch.zeros_like(sorted_neg)).sum()

        loc_loss = self.loc_weight * loc_loss / denom
        cls_loss = (pos_loss + neg_loss) / denom
        return SSDLossOutput(loc_loss + cls_loss, loc_loss, cls_loss, num_pos)
