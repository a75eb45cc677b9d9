"""The extra feature layers SSD adds after fc7 (paper, figure 2).

Each block is a 1x1 conv that halves (or quarters) the channels, then a 3x3 conv that
either downsamples with stride 2 or, at the smallest maps, shrinks the map with no
padding. SSD512 has one block more (conv12) and ends with a 4x4 conv, as in the
original prototxt.
"""

from __future__ import annotations

from torch import Tensor, nn

from ssd_core.models.vgg import conv_block

# (1x1 channels, 3x3 out channels, kernel, stride, padding) per block.
ExtraSpec = tuple[tuple[int, int, int, int, int], ...]

SSD300_EXTRAS: ExtraSpec = (
    (256, 512, 3, 2, 1),  # conv8: 19 -> 10
    (128, 256, 3, 2, 1),  # conv9: 10 -> 5
    (128, 256, 3, 1, 0),  # conv10: 5 -> 3
    (128, 256, 3, 1, 0),  # conv11: 3 -> 1
)

SSD512_EXTRAS: ExtraSpec = (
    (256, 512, 3, 2, 1),  # conv8: 32 -> 16
    (128, 256, 3, 2, 1),  # conv9: 16 -> 8
    (128, 256, 3, 2, 1),  # conv10: 8 -> 4
    (128, 256, 3, 2, 1),  # conv11: 4 -> 2
    (128, 256, 4, 1, 1),  # conv12: 2 -> 1
)


class ExtraLayers(nn.Module):
    """``[B, in_channels, H, W] -> list of [B, C_k, H_k, W_k]``, one map per block."""

    def __init__(self, in_channels: int, spec: ExtraSpec, batch_norm: bool = False) -> None:
        super().__init__()
        blocks = []
        for mid, out, kernel, stride, padding in spec:
            blocks.append(
                nn.Sequential(
                    *conv_block(in_channels, mid, 1, batch_norm),
                    *conv_block(mid, out, kernel, batch_norm, stride=stride, padding=padding),
                )
            )
            in_channels = out
        self.blocks = nn.ModuleList(blocks)
        self.out_channels = tuple(out for _, out, *_ in spec)

    def forward(self, x: Tensor) -> list[Tensor]:
        maps = []
        for block in self.blocks:
            x = block(x)
            maps.append(x)
        return maps
