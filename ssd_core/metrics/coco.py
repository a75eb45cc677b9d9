"""COCO AP through pycocotools, from in-memory detections and ground truth (no files)."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ssd_core.metrics.voc import _array

COCO_STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def _ground_truth_coco(ground_truths: Sequence[Mapping[str, Any]]) -> COCO:
    images, annotations, labels = [], [], set()
    for i, gt in enumerate(ground_truths):
        boxes = _array(gt["boxes"], np.float64).reshape(-1, 4)
        gt_labels = _array(gt["labels"], np.int64).reshape(-1)
        crowd = _array(gt.get("iscrowd", np.zeros(len(boxes), bool)), bool).reshape(-1)
        areas = gt.get("area")
        areas = _array(areas, np.float64).reshape(-1) if areas is not None else None
        images.append({"id": i, "width": int(gt.get("width", 0)), "height": int(gt.get("height", 0))})
        for j, (box, label) in enumerate(zip(boxes, gt_labels)):
            w, h = float(box[2] - box[0]), float(box[3] - box[1])
            annotations.append({
                "id": len(annotations) + 1, "image_id": i, "category_id": int(label),
                "bbox": [float(box[0]), float(box[1]), w, h], "iscrowd": int(crowd[j]),
                # COCO's own area is the mask's; without one the box area stands in.
                "area": float(areas[j]) if areas is not None else w * h,
            })  # fmt: skip
            labels.add(int(label))
    coco = COCO()
    coco.dataset = {"images": images, "annotations": annotations, "categories": [{"id": c} for c in sorted(labels)]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def evaluate_coco(
    detections: Sequence[Mapping[str, Any]], ground_truths: Sequence[Mapping[str, Any]]
) -> dict[str, float]:
    """The 12 standard COCO box metrics.

    Args:
        detections: per image ``boxes`` ``[K, 4]`` xyxy pixels, ``scores``, ``labels``.
        ground_truths: per image (same order) ``boxes``, ``labels``, optional ``iscrowd``
            and ``area`` (the segmentation area COCO uses for the size ranges; the box
            area when absent).

    Returns:
        ``{"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm",
        "ARl"}``, floats in [0, 1], -1 where COCO gives -1 (no ground truth in a range).
    """
    if len(detections) != len(ground_truths):
        raise ValueError(f"{len(detections)} detection entries for {len(ground_truths)} images")
    coco_gt = _ground_truth_coco(ground_truths)
    results = []
    for i, det in enumerate(detections):
        boxes = _array(det["boxes"], np.float64).reshape(-1, 4)
        for box, score, label in zip(boxes, _array(det["scores"], np.float64), _array(det["labels"], np.int64)):
            results.append({
                "image_id": i, "category_id": int(label), "score": float(score),
                "bbox": [float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])],
            })  # fmt: skip
    if not results or not coco_gt.dataset["annotations"]:
        return {k: (0.0 if coco_gt.dataset["annotations"] else -1.0) for k in COCO_STATS}
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(results)
        evaluator = COCOeval(coco_gt, coco_dt, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {k: float(v) for k, v in zip(COCO_STATS, evaluator.stats)}
