"""Prediction heads: per map, a conv for box offsets and one for class logits.

Each map k with A_k boxes per cell gives ``[B, A_k * 4, H, W]`` offsets and
``[B, A_k * C, H, W]`` logits; these are flattened location-major (cell row-major,
then the cell's boxes) and concatenated over maps into ``[B, P, 4]`` and ``[B, P, C]``,
the same order as :func:`ssd_core.priors.make_priors`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


def flatten_map(x: Tensor, last: int) -> Tensor:
    """``[B, A * last, H, W] -> [B, H * W * A, last]`` (location-major)."""
    return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, last)


def depthwise_separable(in_ch: int, out_ch: int) -> nn.Sequential:
    """SSDLite's head conv: 3x3 depthwise + BN + ReLU, then a 1x1 projection."""
    return nn.Sequential(
        nn.Conv2d(in_ch, in_ch, 3, padding=1, groups=in_ch, bias=False),
        nn.BatchNorm2d(in_ch),
        nn.ReLU(inplace=True),
        nn.Conv2d(in_ch, out_ch, 1),
    )


class SSDHead(nn.Module):
    """``list of [B, C_k, H_k, W_k] -> (loc [B, P, 4], conf [B, P, num_classes])``.

    Args:
        in_channels: channels of each map.
        boxes_per_location: A_k of each map.
        num_classes: C, background included.
        depthwise: 3x3 depthwise-separable convs (light model) instead of plain 3x3.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        boxes_per_location: Sequence[int],
        num_classes: int,
        depthwise: bool = False,
    ) -> None:
        super().__init__()
        if len(in_channels) != len(boxes_per_location):
            raise ValueError(f"{len(in_channels)} maps but {len(boxes_per_location)} box counts")

        def conv(i: int, o: int) -> nn.Module:
            return depthwise_separable(i, o) if depthwise else nn.Conv2d(i, o, 3, padding=1)

        self.num_classes = num_classes
        self.loc = nn.ModuleList(conv(c, a * 4) for c, a in zip(in_channels, boxes_per_location))
        self.conf = nn.ModuleList(conv(c, a * num_classes) for c, a in zip(in_channels, boxes_per_location))

    def forward(self, maps: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        loc = [flatten_map(head(x), 4) for head, x in zip(self.loc, maps)]
        conf = [flatten_map(head(x), self.num_classes) for head, x in zip(self.conf, maps)]
        return torch.cat(loc, dim=1), torch.cat(conf, dim=1)
