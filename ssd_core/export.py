"""Export an SSD to ONNX with box decoding inside the graph.

The exported graph maps normalised ``[B, 3, S, S]`` images to ``boxes`` ``[B, P, 4]``
(xyxy normalised to [0, 1]) and ``scores`` ``[B, P, C]`` (softmax probabilities, class 0
background), so a runtime needs no priors and no variances, only thresholding and NMS.
With ``nms=True`` the graph also runs per-class NMS (ONNX ``NonMaxSuppression``, opset
11+) for a batch of one image and returns the kept ``boxes`` ``[K, 4]``, ``scores`` ``[K]``
and ``labels`` ``[K]``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn
from torchvision.ops import batched_nms

from ssd_core.boxes import Variances, decode
from ssd_core.models.ssd import SSD


class DecodedSSD(nn.Module):
    """``images [B, 3, S, S] -> (boxes [B, P, 4] xyxy normalised, scores [B, P, C])``."""

    def __init__(self, model: SSD, variances: Variances = (0.1, 0.2)) -> None:
        super().__init__()
        self.model = model
        self.variances = variances

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        loc, conf = self.model(images)
        return decode(loc, self.model.priors, self.variances).clamp(0.0, 1.0), torch.softmax(conf, dim=-1)


class DetectingSSD(nn.Module):
    """One image in, NMS-ed detections out: ``[1, 3, S, S] -> (boxes [K, 4], scores [K],
    labels [K])``, boxes xyxy normalised, sorted by score.

    Unlike :func:`ssd_core.postprocess.detect` there is no per-class ``top_k`` cut before
    NMS (ONNX has no grouped top-k); the score threshold and ``max_detections`` apply.
    """

    def __init__(
        self,
        model: SSD,
        score_threshold: float = 0.01,
        nms_threshold: float = 0.45,
        max_detections: int = 200,
        variances: Variances = (0.1, 0.2),
    ) -> None:
        super().__init__()
        self.decoded = DecodedSSD(model, variances)
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.max_detections = max_detections

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        boxes, scores = self.decoded(images)
        boxes, scores = boxes[0], scores[0, :, 1:]  # [P, 4], [P, C-1]
        prior, cls = torch.nonzero(scores > self.score_threshold, as_tuple=True)
        kept_scores = scores[prior, cls]
        kept_boxes = boxes[prior]
        keep = batched_nms(kept_boxes, kept_scores, cls, self.nms_threshold)[: self.max_detections]
        return kept_boxes[keep], kept_scores[keep], cls[keep] + 1


def export_onnx(
    model: SSD,
    path: str | Path,
    nms: bool = False,
    opset: int = 17,
    **nms_options: float,
) -> Path:
    """Write ``model`` as ONNX to ``path`` and return the path.

    Without NMS the batch dimension is dynamic; with NMS the graph takes one image.
    Uses the TorchScript-based exporter, for which torchvision registers NMS.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    size = model.image_size
    was_training = model.training
    model.eval()
    try:
        if nms:
            module: nn.Module = DetectingSSD(model, **nms_options)
            outputs, dynamic = (
                ["boxes", "scores", "labels"],
                {"boxes": {0: "K"}, "scores": {0: "K"}, "labels": {0: "K"}},
            )
            example = torch.zeros(1, 3, size, size)
        else:
            module = DecodedSSD(model)
            outputs = ["boxes", "scores"]
            dynamic = {"images": {0: "B"}, "boxes": {0: "B"}, "scores": {0: "B"}}
            example = torch.zeros(2, 3, size, size)
        torch.onnx.export(
            module,
            (example,),
            str(path),
            input_names=["images"],
            output_names=outputs,
            dynamic_axes=dynamic,
            opset_version=opset,
            dynamo=False,
        )
    finally:
        model.train(was_training)
    return path
