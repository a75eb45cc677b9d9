"""Default boxes (priors) of SSD.

For feature map k of size ``f_k`` with scale ``s_k`` and aspect ratios ``a``, every
cell gets, in this order (Caffe's and torchvision's, so weights port between them):

1. a square box of side ``s_k``;
2. a square box of side ``sqrt(s_k * s_{k+1})`` (the paper's extra box; the last map
   uses scale ``s_{m+1}``, so a prior spec always carries m + 1 scales);
3. for each ratio r in ``a``: ``(s_k * sqrt(r), s_k / sqrt(r))`` then its transpose.

Centres sit at ``(i + 0.5) * step_k / image_size`` when steps are given (the original
code's steps, e.g. 8, 16, 32, 64, 100, 300 for SSD300), else at ``(i + 0.5) / f_k``.
The output is ``[P, 4]`` cxcywh normalised to [0, 1], location-major: for each map,
for each cell in row-major order, the boxes of that cell.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

CLIP_MODES = ("none", "size", "box")


def scales_from_range(
    s_min: float,
    s_max: float,
    num_maps: int,
    first_scale: float | None = None,
    integer_percent: bool = False,
) -> list[float]:
    """The paper's linear scale rule, returning the m + 1 scales a prior spec needs.

    ``s_k = s_min + (s_max - s_min) * (k - 1) / (m - 1)`` for k = 1..m, and one more step
    for ``s_{m+1}``. With ``first_scale`` the first map is special-cased as the original
    code does (0.1 on VOC, 0.07 on COCO) and the rule spans the remaining m - 1 maps.
    ``integer_percent`` floors the step to a whole percent as the Caffe script did, which
    reproduces its sizes exactly (SSD300 VOC: 0.1, 0.2, 0.37, 0.54, 0.71, 0.88, 1.05).

    Example:
        >>> scales_from_range(0.2, 0.9, 6, first_scale=0.1, integer_percent=True)
        [0.1, 0.2, 0.37, 0.54, 0.71, 0.88, 1.05]
    """
    if not 0.0 < s_min < s_max:
        raise ValueError(f"need 0 < s_min < s_max, got s_min={s_min}, s_max={s_max}")
    ruled = num_maps - 1 if first_scale is not None else num_maps
    if ruled < 2:
        raise ValueError(f"the scale rule needs at least 2 maps after the first, got num_maps={num_maps}")
    if integer_percent:
        lo, hi = round(s_min * 100), round(s_max * 100)
        step = math.floor((hi - lo) / (ruled - 1))
        percents = [lo + step * k for k in range(ruled + 1)]
        scales = [p / 100 for p in percents]
    else:
        step = (s_max - s_min) / (ruled - 1)
        scales = [s_min + step * k for k in range(ruled + 1)]
    return ([first_scale] if first_scale is not None else []) + scales


@dataclass(frozen=True)
class PriorSpec:
    """Everything that defines a set of default boxes.

    Attributes:
        image_size: input side in pixels (square input, as in the paper).
        feature_sizes: side of each prediction map, e.g. (38, 19, 10, 5, 3, 1).
        scales: m + 1 scales, fractions of the image side.
        aspect_ratios: per map, the ratios r > 1 besides 1 (each adds r and 1/r).
        steps: per map, the pixel stride used to place centres; None for ``1 / f_k``.
        clip: "none"; "size" clamps widths and heights to [0, 1] (torchvision's
            ``DefaultBoxGenerator(clip=True)``); "box" clips each box's corners to the
            image (the Caffe ``clip`` option).
    """

    image_size: int
    feature_sizes: tuple[int, ...]
    scales: tuple[float, ...]
    aspect_ratios: tuple[tuple[float, ...], ...]
    steps: tuple[float, ...] | None = None
    clip: str = "none"

    def __post_init__(self) -> None:
        m = len(self.feature_sizes)
        if len(self.scales) != m + 1:
            raise ValueError(f"PriorSpec needs {m + 1} scales for {m} maps, got {len(self.scales)}")
        if len(self.aspect_ratios) != m:
            raise ValueError(f"PriorSpec needs aspect ratios for {m} maps, got {len(self.aspect_ratios)}")
        if self.steps is not None and len(self.steps) != m:
            raise ValueError(f"PriorSpec needs {m} steps, got {len(self.steps)}")
        if self.clip not in CLIP_MODES:
            raise ValueError(f"PriorSpec.clip must be one of {CLIP_MODES}, got {self.clip!r}")
        if any(s <= 0 for s in self.scales):
            raise ValueError(f"PriorSpec scales must be positive, got {self.scales}")

    @property
    def boxes_per_location(self) -> tuple[int, ...]:
        """Priors per cell of each map: 2 + 2 * len(ratios)."""
        return tuple(2 + 2 * len(r) for r in self.aspect_ratios)

    @property
    def num_priors(self) -> int:
        return sum(f * f * a for f, a in zip(self.feature_sizes, self.boxes_per_location))


def cell_sizes(scale: float, next_scale: float, ratios: Sequence[float]) -> Tensor:
    """``[A, 2]`` (w, h) of one cell's boxes, in the order documented above."""
    sizes = [(scale, scale), (math.sqrt(scale * next_scale),) * 2]
    for r in ratios:
        root = math.sqrt(r)
        sizes += [(scale * root, scale / root), (scale / root, scale * root)]
    return torch.tensor(sizes, dtype=torch.float64)


def make_priors(spec: PriorSpec, dtype: torch.dtype = torch.float32) -> Tensor:
    """``[P, 4]`` cxcywh normalised default boxes, location-major."""
    per_map = []
    for k, f in enumerate(spec.feature_sizes):
        wh = cell_sizes(spec.scales[k], spec.scales[k + 1], spec.aspect_ratios[k])
        if spec.clip == "size":
            wh = wh.clamp(0.0, 1.0)
        step = spec.steps[k] / spec.image_size if spec.steps is not None else 1.0 / f
        centres = (torch.arange(f, dtype=torch.float64) + 0.5) * step
        cy, cx = torch.meshgrid(centres, centres, indexing="ij")
        cxcy = torch.stack((cx, cy), dim=-1).reshape(-1, 1, 2).expand(-1, wh.shape[0], 2)
        boxes = torch.cat((cxcy, wh.expand(f * f, -1, -1)), dim=-1).reshape(-1, 4)
        per_map.append(boxes)
    priors = torch.cat(per_map)
    if spec.clip == "box":
        x1y1 = (priors[:, :2] - priors[:, 2:] / 2).clamp(0.0, 1.0)
        x2y2 = (priors[:, :2] + priors[:, 2:] / 2).clamp(0.0, 1.0)
        priors = torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), dim=1)
    return priors.to(dtype)


def ssd300_prior_spec(scales: Sequence[float] | None = None, clip: str = "none") -> PriorSpec:
    """The original SSD300 (VOC) default boxes: 8732 priors.

    Default scales are the Caffe script's for VOC (s_min 0.2, s_max 0.9, first map 0.1).
    """
    if scales is None:
        scales = scales_from_range(0.2, 0.9, 6, first_scale=0.1, integer_percent=True)
    return PriorSpec(
        image_size=300,
        feature_sizes=(38, 19, 10, 5, 3, 1),
        scales=tuple(scales),
        aspect_ratios=((2.0,), (2.0, 3.0), (2.0, 3.0), (2.0, 3.0), (2.0,), (2.0,)),
        steps=(8, 16, 32, 64, 100, 300),
        clip=clip,
    )


def ssd512_prior_spec(scales: Sequence[float] | None = None, clip: str = "none") -> PriorSpec:
    """The original SSD512 (VOC) default boxes: 24,564 priors.

    Default scales are the Caffe script's for VOC512 (s_min 0.15, s_max 0.9, first 0.07).
    """
    if scales is None:
        scales = scales_from_range(0.15, 0.9, 7, first_scale=0.07, integer_percent=True)
    return PriorSpec(
        image_size=512,
        feature_sizes=(64, 32, 16, 8, 4, 2, 1),
        scales=tuple(scales),
        aspect_ratios=((2.0,), (2.0, 3.0), (2.0, 3.0), (2.0, 3.0), (2.0, 3.0), (2.0,), (2.0,)),
        steps=(8, 16, 32, 64, 128, 256, 512),
        clip=clip,
    )
