"""SSD models: the paper's SSD300/SSD512 on atrous VGG16, and a light model."""

from __future__ import annotations

from collections.abc import Sequence

from ssd_core.models.extras import SSD300_EXTRAS, SSD512_EXTRAS, ExtraLayers
from ssd_core.models.light import LightFeatures
from ssd_core.models.ssd import SSD, VGGFeatures, feature_sizes_for, init_detection_layers
from ssd_core.models.vgg import AtrousVGG16, L2Norm
from ssd_core.priors import PriorSpec, scales_from_range, ssd300_prior_spec, ssd512_prior_spec


def _vgg_ssd(num_classes: int, batch_norm: bool, spec: PriorSpec, extras_spec: tuple) -> SSD:
    backbone = AtrousVGG16(batch_norm=batch_norm)
    extras = ExtraLayers(backbone.out_channels[1], extras_spec, batch_norm=batch_norm)
    channels = backbone.out_channels + extras.out_channels
    model = SSD(VGGFeatures(backbone, extras), channels, spec, num_classes)
    init_detection_layers(model)
    return model


def ssd300_vgg16(
    num_classes: int = 21,
    batch_norm: bool = False,
    scales: Sequence[float] | None = None,
    clip: str = "none",
) -> SSD:
    """SSD300: 300x300 input, 8732 priors from maps 38, 19, 10, 5, 3, 1.

    Args:
        num_classes: C including background (21 for VOC, 81 or 91 for COCO).
        batch_norm: BN after every conv of the backbone and extras (training from scratch).
        scales: the m + 1 = 7 default-box scales; the Caffe VOC ones when None.
        clip: prior clipping mode, see :class:`ssd_core.priors.PriorSpec`.
    """
    return _vgg_ssd(num_classes, batch_norm, ssd300_prior_spec(scales, clip), SSD300_EXTRAS)


def ssd512_vgg16(
    num_classes: int = 21,
    batch_norm: bool = False,
    scales: Sequence[float] | None = None,
    clip: str = "none",
) -> SSD:
    """SSD512: 512x512 input, 24,564 priors from maps 64, 32, 16, 8, 4, 2, 1."""
    return _vgg_ssd(num_classes, batch_norm, ssd512_prior_spec(scales, clip), SSD512_EXTRAS)


def ssd_light(
    num_classes: int,
    image_size: int = 128,
    width: float = 1.0,
    scales: Sequence[float] | None = None,
    num_extras: int = 3,
) -> SSD:
    """The light model for small machines (MobileNet-style backbone, SSDLite heads).

    Centres are placed at ``(i + 0.5) / f_k``. Default scales: first map 0.07, then the
    paper's rule from 0.15 to 0.9.
    """
    features = LightFeatures(width, num_extras)
    sizes = feature_sizes_for(features, image_size)
    if scales is None:
        scales = scales_from_range(0.15, 0.9, len(sizes), first_scale=0.07)
    ratios = tuple((2.0,) if k in (0, len(sizes) - 1) else (2.0, 3.0) for k in range(len(sizes)))
    spec = PriorSpec(image_size, sizes, tuple(scales), ratios, steps=None)
    model = SSD(features, features.out_channels, spec, num_classes, depthwise_head=True)
    init_detection_layers(model)
    return model


__all__ = [
    "SSD",
    "AtrousVGG16",
    "ExtraLayers",
    "L2Norm",
    "LightFeatures",
    "VGGFeatures",
    "ssd300_vgg16",
    "ssd512_vgg16",
    "ssd_light",
]
