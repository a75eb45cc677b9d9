"""From head outputs to detections: decode, threshold, per-class top-k, NMS, keep.

The whole batch is thresholded at once and its candidates grouped by (image, class).
NMS runs first on each image's best ``2 * max_detections`` candidates only (exact, see
:func:`nms_top_of_each_image`). One sort orders them by group and score, which gives each
group's top-k; then groups are packed into a few ``torchvision.ops.nms`` calls, each group offset from the others
so they cannot suppress each other. torchvision's per-class loop instead scans every
image's scores once per class and calls NMS per image.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision.ops import nms

from ssd_core.boxes import Variances, decode

# Groups are packed into NMS calls of about this many boxes: one call per group pays
# the call overhead hundreds of times; one call for everything pays for comparing boxes
# of different groups, since the CPU kernel is quadratic in the worst case.
_CHUNK = 300


def _sort_by_group(groups: Tensor, scores: Tensor) -> tuple[Tensor, Tensor]:
    """Order items by group, best score first within each group (ties keep input order).

    Returns ``(order [K], group_start [K])``: the permutation, and for each sorted position
    where its group starts, so ``arange(K) - group_start`` is the rank within the group.
    One argsort on ``2 * group - score``, which keeps groups apart for scores in [0, 1].
    """
    order = torch.argsort(groups.double() * 2 - scores.double(), stable=True)
    sorted_groups = groups[order]
    position = torch.arange(groups.numel(), device=groups.device)
    new_group = torch.ones_like(sorted_groups, dtype=torch.bool)
    new_group[1:] = sorted_groups[1:] != sorted_groups[:-1]
    return order, torch.cummax(torch.where(new_group, position, 0), dim=0).values


def rank_within_groups(groups: Tensor, scores: Tensor) -> Tensor:
    """``[K] group ids, [K] scores in [0, 1] -> [K]`` rank of each item inside its group
    by score (0 for the highest). Ties keep input order."""
    order, group_start = _sort_by_group(groups, scores)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=order.device) - group_start
    return rank


def grouped_nms(boxes: Tensor, scores: Tensor, groups: Tensor, iou_threshold: float, top_k: int) -> Tensor:
    """NMS within each group after keeping each group's ``top_k`` best.

    Args:
        boxes: ``[K, 4]`` xyxy in [0, 1]; scores: ``[K]`` in (0, 1]; groups: ``[K]`` int64.

    Returns:
        Indices of the kept boxes, sorted by decreasing score.
    """
    n = boxes.shape[0]
    if n == 0:
        return torch.zeros(0, dtype=torch.int64, device=boxes.device)
    order, group_start = _sort_by_group(groups, scores)
    position = torch.arange(n, device=boxes.device)
    new_group = group_start == position
    keep = position - group_start < top_k
    order, group_start, new_group = order[keep], group_start[keep], new_group[keep]

    # Pack whole groups into chunks; inside a chunk, offset each group by 2 (boxes lie in
    # [0, 1]) so they never overlap, in float64 so the offset costs no IoU precision.
    dense_group = torch.cumsum(new_group, 0) - 1
    chunk_of = torch.div(group_start, _CHUNK, rounding_mode="floor")  # a group never straddles two
    chunk_sizes = torch.bincount(chunk_of).tolist()
    kept = []
    for members, local in zip(torch.split(order, chunk_sizes), torch.split(dense_group, chunk_sizes)):
        if members.numel() == 0:
            continue
        offsets = ((local - local[0]) * 2).double()[:, None]
        chunk_boxes = boxes[members].double() + offsets
        kept.append(members[nms(chunk_boxes, scores[members].double(), iou_threshold)])
    index = torch.cat(kept)
    return index[torch.argsort(scores[index], descending=True, stable=True)]


def nms_top_of_each_image(
    boxes: Tensor, scores: Tensor, groups: Tensor, image: Tensor, iou_threshold: float, top_k: int, keep: int
) -> Tensor:
    """:func:`grouped_nms`, exact for each image's ``keep`` best survivors, at a fraction
    of the work when an image has many candidates.

    NMS never lets a box affect a higher-scored one, so the survivors among an image's M
    best candidates are exactly the full run's survivors above the M-th score. When at
    least ``keep`` of them survive, the image's final ``keep`` are among them. First
    pass: each image's ``2 * keep`` best candidates; an image short of ``keep`` survivors
    that had more candidates runs again with all of them.
    """
    first = 2 * keep
    n = boxes.shape[0]
    counts = torch.bincount(image)
    if n == 0 or int(counts.max()) <= first:
        return grouped_nms(boxes, scores, groups, iou_threshold, top_k)
    order, image_start = _sort_by_group(image, scores)  # by image, best first
    subset = order[torch.arange(n, device=boxes.device) - image_start < first]
    kept = subset[grouped_nms(boxes[subset], scores[subset], groups[subset], iou_threshold, top_k)]
    survivors = torch.bincount(image[kept], minlength=counts.numel())
    redo = (survivors < keep) & (counts > first)
    if redo.any():
        again = torch.nonzero(redo[image]).squeeze(1)
        redone = again[grouped_nms(boxes[again], scores[again], groups[again], iou_threshold, top_k)]
        kept = torch.cat((kept[~redo[image[kept]]], redone))
    return kept[torch.argsort(scores[kept], descending=True, stable=True)]


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
    dtype = torch.promote_types(conf.dtype, torch.float32)  # AMP outputs promoted, fp64 kept
    scores = torch.softmax(conf.to(dtype), dim=2)[..., 1:]  # [B, P, C-1]
    image, prior, cls = torch.nonzero(scores > score_threshold, as_tuple=True)
    cand_scores = scores[image, prior, cls]
    # Decode only the candidates' priors. NMS runs in the model's square input geometry
    # (normalised boxes clipped to [0, 1]), as the Caffe DetectionOutput layer and
    # torchvision do; boxes are scaled to pixels afterwards.
    cand_boxes = decode(loc.to(dtype)[image, prior], priors.to(dtype)[prior], variances).clamp(0.0, 1.0)
    groups = image * num_classes + cls
    kept = nms_top_of_each_image(
        cand_boxes, cand_scores, groups, image, nms_threshold, min(top_k, num_priors), max_detections
    )

    # Kept is sorted by score; regroup by image (stable) and keep the first max_detections.
    kept = kept[torch.argsort(image[kept], stable=True)]
    counts = torch.bincount(image[kept], minlength=batch)
    starts = torch.cumsum(counts, 0) - counts
    position = torch.arange(kept.numel(), device=kept.device) - torch.repeat_interleave(starts, counts)
    kept = kept[position < max_detections]
    counts = counts.clamp(max=max_detections).tolist()

    sizes = torch.tensor(image_sizes, dtype=cand_boxes.dtype, device=cand_boxes.device)  # [B, 2] (h, w)
    pixel_boxes = cand_boxes[kept] * sizes[image[kept]].flip(1).repeat(1, 2)  # times (w, h, w, h)
    return [
        {"boxes": b, "scores": cand_scores[idx], "labels": cls[idx] + 1}
        for idx, b in zip(torch.split(kept, counts), torch.split(pixel_boxes, counts))
    ]
