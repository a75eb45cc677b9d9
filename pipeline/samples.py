"""Turning decoded images into model inputs and targets, the same on every worker
(Ray Data map tasks, the in-process feed, evaluation)."""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import cv2
import numpy as np
import torch
from torch import Tensor
from torchvision.io import decode_image

from ssd_core.augment import SSDAugment, resize_for_eval, sample_rng
from ssd_core.data.record import DataError, DetectionRecord
from ssd_core.matching import TargetEncoder
from ssd_core.models.ssd import SSD


def image_index(image_id: str) -> int:
    """A stable integer per image id: the ``index`` of its augmentation draw, the same
    wherever the image is processed."""
    return zlib.crc32(image_id.encode())


def decode(record: DetectionRecord) -> np.ndarray:
    """The record's image as ``[H, W, 3]`` uint8 RGB (a view when the decoder allows)."""
    if record.image_bytes is None:
        raise DataError(f"{record.source}: no image bytes (read it from shards)")
    image = decode_image(torch.frombuffer(bytearray(record.image_bytes), dtype=torch.uint8))
    if image.shape[0] == 1:  # grayscale JPEGs exist in VOC and COCO
        image = image.expand(3, -1, -1)
    return np.ascontiguousarray(image.permute(1, 2, 0).numpy())


def normalise(images: Tensor, model: SSD, channels_last: bool = False) -> Tensor:
    """uint8 ``[B, S, S, 3]`` (on any device) -> float ``[B, 3, S, S]`` with the model's
    mean and std, in NHWC memory order with ``channels_last`` to match a channels-last
    model. Images travel as uint8 (4x less than float) and become float where they train."""
    batch = images.permute(0, 3, 1, 2).float().div_(255.0)  # NHWC memory
    mean = torch.tensor(model.image_mean, device=batch.device).view(1, 3, 1, 1)
    std = torch.tensor(model.image_std, device=batch.device).view(1, 3, 1, 1)
    batch = (batch - mean) / std
    return batch.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def to_model_input(images: Sequence[np.ndarray] | np.ndarray, model: SSD, channels_last: bool = False) -> Tensor:
    """``B`` uint8 ``[H, W, 3]`` images -> ``[B, 3, S, S]`` float, resized and normalised."""
    size = model.image_size
    resized = [im if im.shape[:2] == (size, size) else resize_for_eval(im, size) for im in images]
    return normalise(torch.from_numpy(np.stack(resized)), model, channels_last)


def augment_sample(
    kind: str, image: np.ndarray, boxes: np.ndarray, labels: np.ndarray, size: int, seed: int, epoch: int, index: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One training sample: ``(image [S, S, 3] uint8, boxes [M, 4] normalised xyxy, labels [M])``.

    ``kind``: ``ssd`` (the paper's augmentation) or ``flip`` (resize and a random mirror),
    both reproducible from (seed, epoch, index).
    """
    rng = sample_rng(seed, epoch, index)
    if kind == "ssd":
        return SSDAugment(size)(image, boxes, labels, rng)
    if kind != "flip":
        raise ValueError(f"unknown data.augment {kind!r} (ssd, flip)")
    h, w = image.shape[:2]
    out = resize_for_eval(image, size)
    norm = (boxes / np.array([w, h, w, h], np.float32)).astype(np.float32).reshape(-1, 4)
    if rng.random() < 0.5:
        out = cv2.flip(out, 1)  # 2 us a 128 px image; numpy's out[:, ::-1] copy takes 78 (measured)
        norm = np.stack([1 - norm[:, 2], norm[:, 1], 1 - norm[:, 0], norm[:, 3]], axis=1)
    return out, norm, labels


def encode_batch(
    boxes: Sequence[np.ndarray], labels: Sequence[np.ndarray], encoder: TargetEncoder
) -> tuple[Tensor, Tensor]:
    """Normalised xyxy boxes of B images -> ``(loc_targets [B, P, 4], labels [B, P])``."""
    return encoder.encode_batch(
        [torch.from_numpy(np.asarray(b, np.float32).reshape(-1, 4)) for b in boxes],
        [torch.from_numpy(np.asarray(lab, np.int64)) for lab in labels],
    )
