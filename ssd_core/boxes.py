"""Box format conversions and the SSD offset coding.

Formats (see design.md):
- ``xyxy``: ``[..., 4]`` as (x1, y1, x2, y2).
- ``cxcywh``: ``[..., 4]`` as (centre x, centre y, width, height).

The offset coding is the one of the SSD paper and Caffe code: for a prior
(pcx, pcy, pw, ph) and a box (cx, cy, w, h)::

    d = ((cx - pcx) / (pw * v0), (cy - pcy) / (ph * v0), log(w / pw) / v1, log(h / ph) / v1)

with variances ``(v0, v1) = (0.1, 0.2)``. It equals torchvision's ``BoxCoder``
with weights ``(1 / v0, 1 / v0, 1 / v1, 1 / v1) = (10, 10, 5, 5)``.

torchvision.ops.box_convert does the conversions too, but goes through a generic
dispatch on format strings; these two-line forms are on the per-image hot path
of the data workers, so they are written out here.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

Variances = tuple[float, float]

# exp() of anything larger overflows fp16 and turns an untrained model's boxes into inf;
# torchvision clamps at the same value (log(1000 / 16)).
_MAX_LOG_SCALE = math.log(1000.0 / 16)


def xyxy_to_cxcywh(boxes_xyxy: Tensor) -> Tensor:
    """``[..., 4]`` xyxy -> ``[..., 4]`` cxcywh, same dtype and device."""
    x1y1, x2y2 = boxes_xyxy[..., :2], boxes_xyxy[..., 2:]
    return torch.cat(((x1y1 + x2y2) * 0.5, x2y2 - x1y1), dim=-1)


def cxcywh_to_xyxy(boxes_cxcywh: Tensor) -> Tensor:
    """``[..., 4]`` cxcywh -> ``[..., 4]`` xyxy, same dtype and device."""
    centre, half = boxes_cxcywh[..., :2], boxes_cxcywh[..., 2:] * 0.5
    return torch.cat((centre - half, centre + half), dim=-1)


def encode(boxes_cxcywh: Tensor, priors_cxcywh: Tensor, variances: Variances = (0.1, 0.2)) -> Tensor:
    """Offsets of boxes from priors.

    Args:
        boxes_cxcywh: ``[..., P, 4]`` matched ground truth, one box per prior.
        priors_cxcywh: ``[P, 4]`` default boxes (broadcast over leading dims).
        variances: the (centre, size) variances.

    Returns:
        ``[..., P, 4]`` loc deltas.
    """
    centre = (boxes_cxcywh[..., :2] - priors_cxcywh[:, :2]) / (priors_cxcywh[:, 2:] * variances[0])
    size = torch.log(boxes_cxcywh[..., 2:] / priors_cxcywh[:, 2:]) / variances[1]
    return torch.cat((centre, size), dim=-1)


def decode(loc_deltas: Tensor, priors_cxcywh: Tensor, variances: Variances = (0.1, 0.2)) -> Tensor:
    """Inverse of :func:`encode`, straight to corners.

    Args:
        loc_deltas: ``[..., P, 4]`` regression output.
        priors_cxcywh: ``[P, 4]`` default boxes.

    Returns:
        ``[..., P, 4]`` boxes xyxy in the priors' (normalised) coordinates.
    """
    centre = priors_cxcywh[:, :2] + loc_deltas[..., :2] * variances[0] * priors_cxcywh[:, 2:]
    log_scale = (loc_deltas[..., 2:] * variances[1]).clamp(max=_MAX_LOG_SCALE)
    half = priors_cxcywh[:, 2:] * torch.exp(log_scale) * 0.5
    return torch.cat((centre - half, centre + half), dim=-1)
