"""The atrous VGG16 backbone of SSD (Liu et al. 2016, section 3).

VGG16's conv1_1..conv5_3 with pool3 in ceil mode (so 75 -> 38 at 300 input), pool5
changed to 3x3 stride 1, and fc6/fc7 turned into convolutions: fc6 a 3x3 conv with
dilation 6 (the "atrous" layer), fc7 a 1x1 conv, both with 1024 channels. Returns two
maps: conv4_3 (stride 8, L2-normalised with a learnable per-channel scale that starts
at 20) and fc7 (stride 16).

Layer names follow torchvision's ``vgg16().features`` indices for conv1..conv5 so an
ImageNet state dict loads by name.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# torchvision's vgg16 "D" layout: channels, "M" = max-pool.
_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)


class L2Norm(nn.Module):
    """Normalise each location's channel vector to unit L2 norm, then scale per channel.

    ``[B, C, H, W] -> [B, C, H, W]``. ParseNet's layer; SSD applies it to conv4_3, whose
    activations are much larger than the deeper maps', with the scale initialised to 20.
    """

    def __init__(self, channels: int, initial_scale: float = 20.0, eps: float = 1e-10) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((channels,), float(initial_scale)))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(x, p=2.0, dim=1, eps=self.eps) * self.weight.view(1, -1, 1, 1)


def conv_block(
    in_ch: int, out_ch: int, kernel: int, batch_norm: bool, bias: bool | None = None, **kw: int
) -> list[nn.Module]:
    """conv (+ BN) + ReLU. By default a conv followed by BN has no bias (BN's shift
    replaces it); ``bias=True`` keeps one, as torchvision's vgg16_bn does."""
    conv = nn.Conv2d(in_ch, out_ch, kernel, bias=(not batch_norm) if bias is None else bias, **kw)
    layers: list[nn.Module] = [conv]
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_ch))
    layers.append(nn.ReLU(inplace=True))
    return layers


class AtrousVGG16(nn.Module):
    """``[B, 3, H, W] -> (conv4_3 [B, 512, H/8, W/8], fc7 [B, 1024, H/16, W/16])``.

    With ``batch_norm=True`` every conv is followed by BatchNorm (vgg16_bn layout), the
    variant ScratchDet showed trains from scratch without ImageNet weights.
    """

    out_channels = (512, 1024)

    def __init__(self, batch_norm: bool = False) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch, pools, convs = 3, 0, 0
        for v in _VGG16:
            if v == "M":
                pools += 1
                # pool3 in ceil mode: 75 -> 38 at input 300, as in the original prototxt.
                layers.append(nn.MaxPool2d(2, 2, ceil_mode=pools == 3))
                continue
            # Biased even with BN, so torchvision's vgg16_bn ImageNet weights load by name.
            layers += conv_block(in_ch, int(v), 3, batch_norm, bias=True, padding=1)
            in_ch, convs = int(v), convs + 1
            if convs == 10:
                self.conv4_3_index = len(layers)  # features[:index] ends at conv4_3's ReLU
        self.features = nn.Sequential(*layers)
        self.l2norm = L2Norm(512)
        self.pool5 = nn.MaxPool2d(3, 1, padding=1)
        self.fc6 = nn.Sequential(*conv_block(512, 1024, 3, batch_norm, padding=6, dilation=6))
        self.fc7 = nn.Sequential(*conv_block(1024, 1024, 1, batch_norm))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        conv4_3 = self.features[: self.conv4_3_index](x)
        x = self.features[self.conv4_3_index :](conv4_3)
        fc7 = self.fc7(self.fc6(self.pool5(x)))
        return self.l2norm(conv4_3), fc7
