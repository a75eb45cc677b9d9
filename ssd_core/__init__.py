"""SSD (Single Shot MultiBox Detector) as a plain PyTorch library."""

from ssd_core.models import SSD, ssd300_vgg16, ssd512_vgg16, ssd_light

__all__ = ["SSD", "ssd300_vgg16", "ssd512_vgg16", "ssd_light"]
