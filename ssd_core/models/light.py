"""A light SSD for small machines: a MobileNet-style backbone with SSDLite heads.

Depthwise-separable blocks (MobileNetV1) down to stride 16, then extras that halve the
map down to 1x1; every conv is followed by BatchNorm, so it trains from scratch. At the
default 128x128 input it predicts from 16, 8, 4, 2 and 1 cell maps (1,532 priors) and
costs about 31 M multiply-adds per image (torch's FlopCounterMode), so a 2-core CPU trains it in minutes.
"""

from __future__ import annotations

from torch import Tensor, nn


def conv_bn(in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


def separable(in_ch: int, out_ch: int, stride: int = 1) -> nn.Sequential:
    """3x3 depthwise (strided) then 1x1 pointwise, each with BN + ReLU."""
    return nn.Sequential(conv_bn(in_ch, in_ch, 3, stride, groups=in_ch), conv_bn(in_ch, out_ch, 1))


class LightFeatures(nn.Module):
    """``[B, 3, S, S] -> 2 + num_extras maps`` at strides 8, 16, 32, ...

    Args:
        width: channel multiplier (1.0 gives 128 and 256 channels at strides 8 and 16).
        num_extras: extra stride-2 maps after stride 16 (3 gives 4, 2, 1 at input 128).
    """

    def __init__(self, width: float = 1.0, num_extras: int = 3) -> None:
        super().__init__()

        def ch(c: int) -> int:
            return max(8, int(round(c * width / 8)) * 8)

        self.stride8 = nn.Sequential(
            conv_bn(3, ch(16), 3, stride=2),
            separable(ch(16), ch(32)),
            separable(ch(32), ch(64), stride=2),
            separable(ch(64), ch(64)),
            separable(ch(64), ch(128), stride=2),
            separable(ch(128), ch(128)),
        )
        self.stride16 = nn.Sequential(separable(ch(128), ch(256), stride=2), separable(ch(256), ch(256)))
        extras, in_ch = [], ch(256)
        for i in range(num_extras):
            out = ch(256) if i == 0 else ch(128)
            extras.append(nn.Sequential(conv_bn(in_ch, out // 2, 1), separable(out // 2, out, stride=2)))
            in_ch = out
        self.extras = nn.ModuleList(extras)
        self.out_channels = (ch(128), ch(256)) + tuple(ch(256) if i == 0 else ch(128) for i in range(num_extras))

    def forward(self, x: Tensor) -> list[Tensor]:
        maps = [self.stride8(x)]
        maps.append(self.stride16(maps[-1]))
        for block in self.extras:
            maps.append(block(maps[-1]))
        return maps
