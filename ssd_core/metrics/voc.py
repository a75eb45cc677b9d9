"""Pascal VOC detection AP, as the devkit computes it.

Per class: detections from all images sorted by score (highest first); each is a true
positive if its best-IoU ground truth of that class in its image has IoU >= the
threshold and was not matched before, else a false positive. A detection whose best
ground truth is ``difficult`` counts as neither. Recall is over the non-difficult boxes.
AP is the VOC2007 11-point interpolated precision (``use_07_metric``) or the area under
the monotone precision envelope of VOC2010+. A class with no non-difficult ground truth
is left out of the mean, as the devkit does.

IoU is on continuous coordinates by default; ``pixel_inclusive=True`` adds the devkit's
+1 to widths and heights, for comparing with published numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torchvision.ops import box_iou


def _array(x: Any, dtype: type) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def _iou(det: np.ndarray, gts: np.ndarray, pixel_inclusive: bool) -> np.ndarray:
    """``[4], [G, 4] -> [G]`` IoU of one box with several."""
    if not pixel_inclusive:
        return box_iou(torch.from_numpy(det[None]).double(), torch.from_numpy(gts).double())[0].numpy()
    # The devkit's integer-pixel convention: a box covers x2 - x1 + 1 pixels.
    iw = np.minimum(det[2], gts[:, 2]) - np.maximum(det[0], gts[:, 0]) + 1
    ih = np.minimum(det[3], gts[:, 3]) - np.maximum(det[1], gts[:, 1]) + 1
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    area = (det[2] - det[0] + 1) * (det[3] - det[1] + 1) + (gts[:, 2] - gts[:, 0] + 1) * (gts[:, 3] - gts[:, 1] + 1)
    return inter / (area - inter)


def average_precision(recall: np.ndarray, precision: np.ndarray, use_07_metric: bool = True) -> float:
    """AP from a precision-recall curve (both ``[K]``, in detection order)."""
    if use_07_metric:
        points = [precision[recall >= t].max() if (recall >= t).any() else 0.0 for t in np.arange(0.0, 1.1, 0.1)]
        return float(np.mean(points))
    r = np.concatenate(([0.0], recall, [1.0]))
    p = np.concatenate(([0.0], precision, [0.0]))
    p = np.maximum.accumulate(p[::-1])[::-1]
    changes = np.nonzero(r[1:] != r[:-1])[0]
    return float(np.sum((r[changes + 1] - r[changes]) * p[changes + 1]))


def precision_recall(
    detections: Sequence[Mapping[str, Any]],
    ground_truths: Sequence[Mapping[str, Any]],
    label: int,
    iou_threshold: float = 0.5,
    pixel_inclusive: bool = False,
) -> tuple[np.ndarray, np.ndarray, int]:
    """``(recall [K], precision [K], n_positives)`` of one class over all images."""
    gts, used, npos = [], [], 0
    for gt in ground_truths:
        keep = _array(gt["labels"], np.int64) == label
        boxes = _array(gt["boxes"], np.float64).reshape(-1, 4)[keep]
        difficult = _array(gt.get("difficult", np.zeros(keep.shape, bool)), bool).reshape(-1)[keep]
        gts.append((boxes, difficult))
        used.append(np.zeros(len(boxes), bool))
        npos += int((~difficult).sum())
    scores, images, boxes = [], [], []
    for i, det in enumerate(detections):
        keep = _array(det["labels"], np.int64) == label
        scores.append(_array(det["scores"], np.float64)[keep])
        boxes.append(_array(det["boxes"], np.float64).reshape(-1, 4)[keep])
        images.append(np.full(int(keep.sum()), i))
    scores_all, images_all, boxes_all = np.concatenate(scores), np.concatenate(images), np.concatenate(boxes)
    order = np.argsort(-scores_all, kind="stable")
    tp, fp = np.zeros(len(order)), np.zeros(len(order))
    for rank, d in enumerate(order):
        gt_boxes, difficult = gts[images_all[d]]
        if len(gt_boxes) == 0:
            fp[rank] = 1
            continue
        overlaps = _iou(boxes_all[d], gt_boxes, pixel_inclusive)
        best = int(np.argmax(overlaps))
        if overlaps[best] >= iou_threshold:
            if difficult[best]:
                continue  # neither true nor false positive
            if not used[images_all[d]][best]:
                tp[rank] = 1
                used[images_all[d]][best] = True
            else:
                fp[rank] = 1
        else:
            fp[rank] = 1
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    recall = tp / max(npos, 1)
    precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return recall, precision, npos


def evaluate_voc(
    detections: Sequence[Mapping[str, Any]],
    ground_truths: Sequence[Mapping[str, Any]],
    iou_threshold: float = 0.5,
    use_07_metric: bool = True,
    pixel_inclusive: bool = False,
    curves: bool = False,
) -> dict[str, Any]:
    """VOC mAP and per-class AP.

    Args:
        detections: one dict per image with ``boxes`` ``[K, 4]`` xyxy pixels, ``scores``
            ``[K]``, ``labels`` ``[K]`` (tensors or arrays).
        ground_truths: one dict per image, same order, with ``boxes`` ``[N, 4]``,
            ``labels`` ``[N]`` and optionally ``difficult`` ``[N]`` bool.

    Returns:
        ``{"mAP": float, "AP": {label: float}}`` over the classes that have ground truth;
        with ``curves``, also ``"curves": {label: (recall [K], precision [K])}``.
    """
    if len(detections) != len(ground_truths):
        raise ValueError(f"{len(detections)} detection entries for {len(ground_truths)} images")
    labels = sorted({int(v) for gt in ground_truths for v in _array(gt["labels"], np.int64).reshape(-1)})
    ap, pr = {}, {}
    for label in labels:
        recall, precision, npos = precision_recall(detections, ground_truths, label, iou_threshold, pixel_inclusive)
        if npos == 0:
            continue  # only difficult objects: left out, as the devkit does
        ap[label] = average_precision(recall, precision, use_07_metric) if len(recall) else 0.0
        pr[label] = (recall, precision)
    result: dict[str, Any] = {"mAP": float(np.mean(list(ap.values()))) if ap else 0.0, "AP": ap}
    if curves:
        result["curves"] = pr
    return result
