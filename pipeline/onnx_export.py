"""ONNX export that is checked before it is written: what ``jobs/export.py`` runs.

The graph (:func:`ssd_core.export.export_onnx`: decoding inside, NMS optional) is written
to a temporary file, run with onnxruntime on inputs the model sees, compared with the
eager model's outputs, and only then moved to its destination. A graph that disagrees
never lands where a server would pick it up.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from ssd_core.export import DecodedSSD, DetectingSSD, export_onnx
from ssd_core.models.ssd import SSD


class ExportMismatch(RuntimeError):
    """The ONNX graph's outputs differ from the eager model's."""


def _compare(name: str, got: np.ndarray, want: np.ndarray, atol: float) -> float:
    if got.shape != want.shape:
        raise ExportMismatch(f"{name}: ONNX gives shape {got.shape}, eager {want.shape}")
    diff = float(np.abs(got.astype(np.float64) - want.astype(np.float64)).max()) if got.size else 0.0
    if diff > atol:
        raise ExportMismatch(f"{name}: ONNX differs from eager by {diff:.2e} (> {atol:.0e})")
    return diff


def _compare_detections(got: list[np.ndarray], want: list[np.ndarray], atol: float, min_agreement: float) -> float:
    """NMS outputs as sets. Boxes of near-equal score may come out in another order, and a
    pair of boxes whose IoU sits on the NMS threshold may be kept by one runtime and
    suppressed by the other (float rounding), so each ONNX detection is matched to an
    eager one of the same class, box and score within ``atol``, one to one, and at least
    ``min_agreement`` of the larger set must match (above the lowest kept score, where the
    ``max_detections`` cut may fall either side of equal scores). Returns the agreement."""
    boxes, scores, labels = got
    w_boxes, w_scores, w_labels = want
    if not len(scores) and not len(w_scores):
        return 1.0
    if len(scores) and len(w_scores):
        # The max_detections cut falls among near-equal scores: compare above it.
        floor = max(scores.min(), w_scores.min()) + atol
        keep, w_keep = scores > floor, w_scores > floor
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        w_boxes, w_scores, w_labels = w_boxes[w_keep], w_scores[w_keep], w_labels[w_keep]
    box_diff = np.abs(boxes[:, None, :] - w_boxes[None, :, :]).max(-1)
    cost = np.maximum(box_diff, np.abs(scores[:, None] - w_scores[None, :]))
    cost[labels[:, None] != w_labels[None, :]] = np.inf
    matched, free = 0, np.ones(len(w_scores), bool)
    for i in np.argsort(-scores):
        j = int(np.argmin(np.where(free, cost[i], np.inf))) if free.any() else 0
        if free.any() and free[j] and cost[i, j] <= atol:
            free[j], matched = False, matched + 1
    agreement = matched / max(len(scores), len(w_scores))
    if agreement < min_agreement:
        raise ExportMismatch(f"NMS: {matched} of ONNX's {len(scores)} detections match eager's {len(w_scores)} "
                             f"({agreement:.1%} < {min_agreement:.0%})")  # fmt: skip
    return agreement


def export_verified(
    model: SSD, out: str | Path, nms: bool = False, atol: float = 1e-4, min_agreement: float = 0.95, seed: int = 0
) -> dict:
    """Export ``model`` to ``out`` after checking the ONNX outputs against eager ones on
    random images (a batch of 2 without NMS, 1 with): decoded boxes and scores within
    ``atol``; with NMS, the kept detections as sets (see :func:`_compare_detections`).
    Returns ``{"path", "max_abs_diff"}`` (without NMS) or ``{"path", "agreement"}``.

    Raises:
        ExportMismatch: an output's shape or values differ (nothing is written).
    """
    import onnxruntime as ort

    model = model.eval()
    out = Path(out)
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(1 if nms else 2, 3, model.image_size, model.image_size, generator=g) * 2 - 1
    with torch.no_grad():
        eager = (DetectingSSD(model) if nms else DecodedSSD(model))(images)
    with tempfile.TemporaryDirectory(dir=out.parent if out.parent.exists() else None) as tmp:
        candidate = export_onnx(model, Path(tmp) / out.name, nms=nms)
        session = ort.InferenceSession(str(candidate), providers=["CPUExecutionProvider"])
        got = session.run(None, {"images": images.numpy()})
        if nms:
            result = {"agreement": _compare_detections(got, [e.numpy() for e in eager], atol, min_agreement)}
        else:
            outputs = zip(session.get_outputs(), got, eager)
            result = {"max_abs_diff": max(_compare(o.name, g_, e.numpy(), atol) for o, g_, e in outputs)}
        out.parent.mkdir(parents=True, exist_ok=True)
        Path(candidate).replace(out)
    return {**result, "path": str(out)}
