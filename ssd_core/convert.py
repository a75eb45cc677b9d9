"""Weights from elsewhere: torchvision's SSD300, and ImageNet VGG16 state dicts.

Nothing here downloads: the caller passes a module or a file it already has.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from ssd_core.models import ssd300_vgg16
from ssd_core.models.ssd import SSD
from ssd_core.priors import PriorSpec

# torchvision's ssd300_vgg16 normalises 0-255-style: pixels in [0, 1] minus the Caffe
# VGG mean, divided by 1/255.
TORCHVISION_SSD_MEAN = (0.48235, 0.45882, 0.40784)
TORCHVISION_SSD_STD = (1.0 / 255.0, 1.0 / 255.0, 1.0 / 255.0)

# Index of each of VGG16's 13 convs in torchvision's ``vgg16().features``.
VGG16_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)


def from_torchvision(tv_model: nn.Module) -> SSD:
    """An ssd_core SSD300 with the weights and default boxes of a torchvision one.

    Args:
        tv_model: ``torchvision.models.detection.ssd300_vgg16(...)`` with any
            ``num_classes``, trained or not.

    Returns:
        An :class:`SSD` whose ``forward`` on a normalised 300x300 batch equals
        ``tv_model.head(tv_model.backbone(x))`` (``bbox_regression`` and ``cls_logits``),
        with ``priors`` equal to torchvision's default boxes and ``image_mean``/``image_std``
        set to torchvision's normalisation.
    """
    gen = tv_model.anchor_generator
    num_classes = tv_model.head.classification_head.num_columns
    spec = PriorSpec(
        image_size=300,
        feature_sizes=(38, 19, 10, 5, 3, 1),
        scales=tuple(float(s) for s in gen.scales),
        aspect_ratios=tuple(tuple(float(r) for r in ratios) for ratios in gen.aspect_ratios),
        steps=tuple(gen.steps) if gen.steps is not None else None,
        clip="size" if gen.clip else "none",
    )
    model = ssd300_vgg16(num_classes=num_classes, scales=spec.scales, clip=spec.clip)
    if model.prior_spec != spec:
        raise ValueError(f"torchvision model's default boxes {spec} are not an SSD300 layout this port knows")
    model.load_state_dict(torchvision_state_dict(tv_model.state_dict()))
    model.image_mean, model.image_std = TORCHVISION_SSD_MEAN, TORCHVISION_SSD_STD
    return model


def torchvision_state_dict(tv_state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename a torchvision ``ssd300_vgg16`` state dict to ssd_core's SSD300 keys."""
    renames = {"backbone.scale_weight": "features.backbone.l2norm.weight"}
    for i in VGG16_CONV_INDICES[:10]:  # conv1_1 .. conv4_3 live in tv's backbone.features
        for p in ("weight", "bias"):
            renames[f"backbone.features.{i}.{p}"] = f"features.backbone.features.{i}.{p}"
    # tv's backbone.extra.0 = [pool4, conv5_1, relu, conv5_2, relu, conv5_3, relu, [pool5, fc6, relu, fc7, relu]]
    for tv_i, i in zip((1, 3, 5), VGG16_CONV_INDICES[10:]):
        for p in ("weight", "bias"):
            renames[f"backbone.extra.0.{tv_i}.{p}"] = f"features.backbone.features.{i}.{p}"
    for p in ("weight", "bias"):
        renames[f"backbone.extra.0.7.1.{p}"] = f"features.backbone.fc6.0.{p}"
        renames[f"backbone.extra.0.7.3.{p}"] = f"features.backbone.fc7.0.{p}"
        for block in range(4):
            for conv in (0, 2):
                renames[f"backbone.extra.{block + 1}.{conv}.{p}"] = f"features.extras.blocks.{block}.{conv}.{p}"
        for k in range(6):
            renames[f"head.regression_head.module_list.{k}.{p}"] = f"head.loc.{k}.{p}"
            renames[f"head.classification_head.module_list.{k}.{p}"] = f"head.conf.{k}.{p}"
    unknown = sorted(set(tv_state) - set(renames))
    if unknown:
        raise ValueError(f"unexpected keys in the torchvision SSD300 state dict: {unknown[:5]}")
    return {renames[k]: v for k, v in tv_state.items()}


def load_vgg16_imagenet(model: SSD, path: str | Path) -> SSD:
    """Load a torchvision VGG16 (or VGG16-BN) ImageNet state-dict file into the backbone.

    conv1_1..conv5_3 load as they are (with BN statistics for ``vgg16_bn``). fc6 and
    fc7 are made from the classifier as the paper did: fc6's ``4096 x 512 x 7 x 7`` weights
    keep every 4th filter and every 3rd tap of the 7x7 kernel (a 3x3 kernel whose taps are
    3 apart, dilation 6 once pool5 keeps stride 1), fc7's ``4096 x 4096`` keep every 4th
    row and column. Biases are kept where the layer has one (not when BN follows).

    Args:
        model: an SSD300 or SSD512 from this package (``batch_norm`` must match the file).
        path: a ``.pth`` file holding the state dict of ``torchvision.models.vgg16`` or
            ``vgg16_bn`` (loaded with ``weights_only=True``: no code runs).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a VGG16 state dict matching the model's layout.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no VGG16 weights file at {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or "classifier.0.weight" not in state:
        raise ValueError(f"{path} is not a torchvision VGG16 state dict (no 'classifier.0.weight')")
    backbone = model.features.backbone
    target = backbone.features.state_dict()
    features = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
    if set(features) != set(target) or any(features[k].shape != target[k].shape for k in target):
        kind = "vgg16_bn" if any(isinstance(m, nn.BatchNorm2d) for m in backbone.features) else "vgg16"
        raise ValueError(f"{path}: its conv layers do not match this model's {kind} backbone")
    backbone.features.load_state_dict(features)

    fc6 = state["classifier.0.weight"].view(4096, 512, 7, 7)[::4, :, ::3, ::3]
    fc7 = state["classifier.3.weight"][::4, ::4].reshape(1024, 1024, 1, 1)
    with torch.no_grad():
        for conv, weight, bias in (
            (backbone.fc6[0], fc6, state["classifier.0.bias"][::4]),
            (backbone.fc7[0], fc7, state["classifier.3.bias"][::4]),
        ):
            conv.weight.copy_(weight)
            if conv.bias is not None:
                conv.bias.copy_(bias)
    return model
