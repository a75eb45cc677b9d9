"""Turning records into model inputs: normalised image tensors and encoded targets.

The Ray Data issue moves this onto CPU workers; the functions stay the same.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ssd_core.matching import TargetEncoder
from ssd_core.models.ssd import SSD


def to_model_input(images: Sequence[np.ndarray], model: SSD, channels_last: bool = False) -> Tensor:
    """``B`` uint8 ``[H, W, 3]`` images -> ``[B, 3, S, S]`` float, resized and normalised
    (in NHWC memory order with ``channels_last``, to match a channels-last model)."""
    size = model.image_size
    tensors = []
    for image in images:
        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)
        if x.shape[1:] != (size, size):
            x = F.interpolate(x[None], size=(size, size), mode="bilinear", align_corners=False)[0]
        tensors.append(x)
    batch = torch.stack(tensors)
    mean = torch.tensor(model.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(model.image_std).view(1, 3, 1, 1)
    batch = (batch - mean) / std
    return batch.contiguous(memory_format=torch.channels_last) if channels_last else batch


def encode_batch(
    boxes: Sequence[np.ndarray], labels: Sequence[np.ndarray], sizes: Sequence[tuple[int, int]], encoder: TargetEncoder
) -> tuple[Tensor, Tensor]:
    """Pixel xyxy boxes of B images -> ``(loc_targets [B, P, 4], labels [B, P])``."""
    normalised = [
        torch.from_numpy(np.asarray(b, np.float32).reshape(-1, 4)) / torch.tensor([w, h, w, h], dtype=torch.float32)
        for b, (h, w) in zip(boxes, sizes)
    ]
    return encoder.encode_batch(normalised, [torch.from_numpy(np.asarray(lab, np.int64)) for lab in labels])


def hflip(image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror an ``[H, W, 3]`` image and its ``[N, 4]`` pixel xyxy boxes."""
    width = image.shape[1]
    flipped = boxes.copy()
    flipped[:, [0, 2]] = width - boxes[:, [2, 0]]
    return image[:, ::-1], flipped
