"""Matching default boxes to ground truth and encoding the regression targets.

The rule (design.md, the original Caffe ``MatchBBox`` with ``BIPARTITE`` then
``PER_PREDICTION``):

1. Greedy bipartite match: repeatedly take the (box, prior) pair of highest IoU among
   the boxes and priors not yet matched, and match them. Every box gets a prior of its
   own, and two boxes whose best prior is the same do not steal it from each other:
   the second takes its next best. (torchvision's SSDMatcher forces each box onto its
   argmax prior, so of two boxes sharing an argmax one loses its only positive.)
2. Every other prior whose best IoU is >= ``iou_threshold`` takes its best box.

Boxes come in as ``[N, 4]`` xyxy normalised to [0, 1], priors as ``[P, 4]`` cxcywh.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import box_iou

from ssd_core.boxes import Variances, cxcywh_to_xyxy, encode, xyxy_to_cxcywh


def match_priors(iou: Tensor, iou_threshold: float = 0.5) -> Tensor:
    """Assign each prior a box index, or -1 for background.

    Args:
        iou: ``[N, P]`` IoU of every box with every prior, N >= 1.
        iou_threshold: the per-prior threshold of step 2.

    Returns:
        ``[P]`` int64, the matched box of each prior or -1.

    Example (two boxes whose best prior is prior 0; box 1 falls back to prior 1):
        >>> iou = torch.tensor([[0.9, 0.1, 0.0], [0.8, 0.6, 0.2]])
        >>> match_priors(iou).tolist()
        [0, 1, -1]
    """
    num_boxes, num_priors = iou.shape
    best_iou, matches = iou.max(dim=0)
    matches[best_iou < iou_threshold] = -1

    # Step 1 overrides step 2. The globally best remaining pair is always some free box
    # with its best free prior, so only each box's best prior is needed, plus a re-scan of
    # one row when another box took that prior first: N row-maxes instead of N full
    # argmaxes over [N, P]. Ties go to the lower box index, as a flat argmax would.
    box_best_iou, box_best_prior = iou.max(dim=1)
    best_iou_list, best_prior_list = box_best_iou.tolist(), box_best_prior.tolist()
    free_boxes = set(range(num_boxes))
    taken: list[int] = []
    while free_boxes and len(taken) < num_priors:
        box = max(free_boxes, key=lambda b: (best_iou_list[b], -b))
        prior = best_prior_list[box]
        if prior in taken:
            row = iou[box].clone()
            row[taken] = -1.0
            value, index = row.max(dim=0)
            best_iou_list[box], best_prior_list[box] = float(value), int(index)
            continue  # re-rank: this box's new best may no longer be the top pair
        matches[prior] = box
        taken.append(prior)
        free_boxes.discard(box)
    return matches


class TargetEncoder:
    """Encodes one image's boxes against a fixed set of priors.

    Holds the priors' corner form so each call computes only the IoU and the offsets;
    the data workers call it once per image.
    """

    def __init__(self, priors_cxcywh: Tensor, iou_threshold: float = 0.5, variances: Variances = (0.1, 0.2)) -> None:
        self.priors_cxcywh = priors_cxcywh
        self.priors_xyxy = cxcywh_to_xyxy(priors_cxcywh)
        self.iou_threshold = iou_threshold
        self.variances = variances

    def __call__(self, boxes_xyxy: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """``([N, 4] xyxy normalised, [N] in 1..C-1) -> (loc_deltas [P, 4], labels [P])``."""
        priors = self.priors_cxcywh
        num_priors = priors.shape[0]
        if boxes_xyxy.numel() == 0:
            return priors.new_zeros(num_priors, 4), torch.zeros(num_priors, dtype=torch.int64)
        boxes_xyxy = boxes_xyxy.to(priors.dtype)
        matches = match_priors(box_iou(boxes_xyxy, self.priors_xyxy), self.iou_threshold)
        positive = matches >= 0
        safe = matches.clamp(min=0)
        prior_labels = torch.where(positive, labels.to(torch.int64)[safe], 0)
        loc = encode(xyxy_to_cxcywh(boxes_xyxy)[safe], priors, self.variances)
        return loc.masked_fill_(~positive[:, None], 0.0), prior_labels


def encode_targets(
    boxes_xyxy: Tensor,
    labels: Tensor,
    priors_cxcywh: Tensor,
    iou_threshold: float = 0.5,
    variances: Variances = (0.1, 0.2),
) -> tuple[Tensor, Tensor]:
    """Match one image's boxes to the priors and encode the regression targets.

    Args:
        boxes_xyxy: ``[N, 4]`` ground truth, xyxy normalised to [0, 1]; N may be 0.
            Boxes must have positive width and height (the datasets reject others).
        labels: ``[N]`` int64 in 1..C-1.
        priors_cxcywh: ``[P, 4]`` default boxes.

    Returns:
        ``(loc_deltas [P, 4], labels [P])``: offsets of each prior's matched box (zeros
        where unmatched; the loss ignores them) and its label, 0 for background.
    """
    return TargetEncoder(priors_cxcywh, iou_threshold, variances)(boxes_xyxy, labels)
