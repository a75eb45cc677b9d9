"""From head outputs to detections: decode, threshold, per-class top-k, NMS, keep.

The whole batch goes through one ``torchvision.ops.batched_nms`` call, grouped by
(image, class), instead of one call per image and class: with trained-like scores most
of the ``B * P * (C - 1)`` candidates fall below the score threshold, and the per-call
overhead is what a Python loop over classes and images pays.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision.ops import batched_nms

from ssd_core.boxes import Variances, decode


def rank_within_groups(groups: Tensor, scores: Tensor) -> Tensor:
    """``[K] group ids, [K] scores -> [K]`` rank of each item inside its group by score
    (0 for the highest). Ties keep input order."""
    order = torch.argsort(scores, descending=True, stable=True)
    order = order[torch.argsort(groups[order], stable=True)]
    sorted_groups = groups[order]
    position = torch.arange(groups.numel(), device=groups.device)
    group_start = torch.zeros_like(position)
    new_group = torch.ones_like(sorted_groups, dtype=torch.bool)
    new_group[1:] = sorted_groups[1:] != sorted_groups[:-1]
    group_start[new_group] = position[new_group]
    group_start = torch.cummax(group_start, dim=0).values
    rank = torch.empty_like(position)
    rank[order] = position - group_start
    return rank


@torch.no_grad()
def detect(
    loc: Tensor,
    conf: Tensor,
    priors: Tensor,
    image_sizes: Sequence[tuple[int, int]],
    score_threshold: float = 0.01,
    nms_threshold: float = 0.45,
    top_k: int = 400,
    max_detections: int = 200,
    variances: Variances = (0.1, 0.2),
) -> list[dict[str, Tensor]]:
    """Detections per image from SSD head outputs.

    Args:
        loc: ``[B, P, 4]`` predicted offsets.
        conf: ``[B, P, C]`` class logits (class 0 background).
        priors: ``[P, 4]`` cxcywh normalised default boxes.
        image_sizes: B pairs (height, width) of the original images, in pixels.
        score_threshold: keep class scores strictly above this.
        nms_threshold: IoU above which a lower-scored box of the same class is suppressed.
        top_k: per image and class, the highest-scored candidates that enter NMS.
        max_detections: per image, the highest-scored boxes kept after NMS.

    Returns:
        One dict per image: ``boxes`` ``[K, 4]`` float xyxy in pixels of the original
        image (clipped to it), ``scores`` ``[K]`` descending, ``labels`` ``[K]`` int64 in
        1..C-1.
    """
    batch, num_priors, num_classes = conf.shape
    if len(image_sizes) != batch:
        raise ValueError(f"{len(image_sizes)} image sizes for a batch of {batch}")
    boxes = decode(loc.float(), priors.float(), variances)  # [B, P, 4] normalised xyxy
    scores = torch.softmax(conf.float(), dim=2)[..., 1:]  # [B, P, C-1]

    image, prior, cls = torch.nonzero(scores > score_threshold, as_tuple=True)
    cand_scores = scores[image, prior, cls]
    groups = image * num_classes + cls
    if cand_scores.numel() and top_k < num_priors:
        keep = rank_within_groups(groups, cand_scores) < top_k
        image, prior, cls, cand_scores, groups = image[keep], prior[keep], cls[keep], cand_scores[keep], groups[keep]

    # NMS in the model's square input geometry (normalised boxes clipped to [0, 1]), as
    # the Caffe DetectionOutput layer and torchvision do; scaled to pixels afterwards.
    cand_boxes = boxes[image, prior].clamp(0.0, 1.0)
    kept = batched_nms(cand_boxes, cand_scores, groups, nms_threshold)  # sorted by score
    kept = kept[rank_within_groups(image[kept], cand_scores[kept]) < max_detections]

    sizes = torch.tensor(image_sizes, dtype=cand_boxes.dtype, device=cand_boxes.device)  # [B, 2] (h, w)
    pixel_boxes = cand_boxes[kept] * sizes[image[kept]].flip(1).repeat(1, 2)  # times (w, h, w, h)
    image_of_kept = image[kept]
    order = torch.argsort(image_of_kept, stable=True)  # stable: score order within image
    counts = torch.bincount(image_of_kept, minlength=batch).tolist()
    kept, pixel_boxes = kept[order], pixel_boxes[order]
    return [
        {"boxes": b, "scores": cand_scores[idx], "labels": cls[idx] + 1}
        for idx, b in zip(torch.split(kept, counts), torch.split(pixel_boxes, counts))
    ]
