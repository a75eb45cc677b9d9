"""The SSD detector: a feature extractor, a head, and the default boxes it predicts for."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ssd_core.models.heads import SSDHead
from ssd_core.priors import PriorSpec, make_priors

# ImageNet statistics, RGB in [0, 1]: what torchvision's ImageNet VGG16 weights expect.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class SSD(nn.Module):
    """Single Shot MultiBox Detector.

    ``forward(images [B, 3, S, S]) -> (loc [B, P, 4], conf [B, P, C])``: loc are offsets
    from ``priors`` (variances 0.1, 0.2), conf are raw logits with class 0 background.
    Images are RGB scaled to [0, 1] then normalised with ``image_mean``/``image_std``,
    resized to ``prior_spec.image_size`` square.

    Attributes:
        priors: ``[P, 4]`` cxcywh normalised default boxes (a non-persistent buffer, so it
            follows ``.to(device)`` but is recomputed from ``prior_spec`` on load).
        prior_spec: the :class:`PriorSpec` the priors come from.
        num_classes: C, background included.
    """

    priors: Tensor

    def __init__(
        self,
        features: nn.Module,
        feature_channels: Sequence[int],
        prior_spec: PriorSpec,
        num_classes: int,
        depthwise_head: bool = False,
        image_mean: Sequence[float] = IMAGENET_MEAN,
        image_std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes counts the background and must be >= 2, got {num_classes}")
        self.features = features
        self.head = SSDHead(feature_channels, prior_spec.boxes_per_location, num_classes, depthwise_head)
        self.prior_spec = prior_spec
        self.num_classes = num_classes
        self.image_mean = tuple(image_mean)
        self.image_std = tuple(image_std)
        self.register_buffer("priors", make_priors(prior_spec), persistent=False)

    @property
    def image_size(self) -> int:
        return self.prior_spec.image_size

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        maps = self.features(images)
        sizes = tuple(m.shape[-1] for m in maps)
        if sizes != self.prior_spec.feature_sizes or any(m.shape[-2] != m.shape[-1] for m in maps):
            raise ValueError(
                f"input {tuple(images.shape[-2:])} gives feature maps {[tuple(m.shape[-2:]) for m in maps]}, "
                f"but the priors were made for {self.prior_spec.feature_sizes} "
                f"(input {self.image_size}x{self.image_size}); resize the images first"
            )
        return self.head(maps)


class VGGFeatures(nn.Module):
    """Atrous VGG16 + extra layers: ``[B, 3, S, S] -> [conv4_3, fc7, *extras]``."""

    def __init__(self, backbone: nn.Module, extras: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.extras = extras

    def forward(self, x: Tensor) -> list[Tensor]:
        conv4_3, fc7 = self.backbone(x)
        return [conv4_3, fc7, *self.extras(fc7)]


def init_detection_layers(model: SSD) -> None:
    """Xavier-uniform weights and zero biases for every conv not loaded from ImageNet.

    The original code initialises the extras and heads this way; the backbone convs get
    the same when training from scratch (their ImageNet weights, if any, load after).
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def feature_sizes_for(features: nn.Module, image_size: int) -> tuple[int, ...]:
    """Side of each map ``features`` gives for a square input (a dry run on zeros)."""
    was_training = features.training
    features.eval()
    maps = features(torch.zeros(1, 3, image_size, image_size))
    features.train(was_training)
    return tuple(int(m.shape[-1]) for m in maps)
