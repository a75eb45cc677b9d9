"""The SSD photometric distortion, as the original Caffe ``DistortImage`` does it.

On uint8 RGB ``[H, W, 3]`` with OpenCV, as the original ran:

- brightness: add a delta in [-32, 32];
- contrast: multiply by a factor in [0.5, 1.5] (Caffe's ``convertTo(alpha)``; not
  torchvision's blend towards the mean);
- saturation: scale the S channel of OpenCV's 8-bit HSV by [0.5, 1.5];
- hue: add [-18, 18] to the 8-bit H channel (OpenCV's H is 0-179 in 2-degree steps, so
  +-36 degrees), wrapping around the circle (Caffe saturates at 0 and 255, which maps
  hues past 179 to garbage; wrapping is what the operation means).

Each is applied with probability 0.5; brightness first, then contrast either before
saturation and hue or after them (Caffe picks the order at random). Every step rounds and
saturates to uint8 as Caffe's ``convertTo`` does. Brightness and contrast become one
256-entry lookup table (two when contrast comes last) and saturation and hue share one HSV
round trip, so a draw costs at most five cheap uint8 passes (typically two or three).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

_IDENTITY = np.arange(256, dtype=np.float64)


@dataclass(frozen=True)
class PhotometricParams:
    """One draw. Deltas of 0 and factors of 1 mean "not applied"."""

    brightness: float = 0.0  # added, 0-255 units
    contrast: float = 1.0
    saturation: float = 1.0
    hue: float = 0.0  # added to OpenCV's 8-bit H (0-179)
    contrast_last: bool = False


def sample_photometric(rng: np.random.Generator) -> PhotometricParams:
    """Caffe SSD's ranges, each step with probability 0.5."""
    return PhotometricParams(
        brightness=float(rng.uniform(-32, 32)) if rng.random() < 0.5 else 0.0,
        contrast=float(rng.uniform(0.5, 1.5)) if rng.random() < 0.5 else 1.0,
        saturation=float(rng.uniform(0.5, 1.5)) if rng.random() < 0.5 else 1.0,
        hue=float(rng.uniform(-18, 18)) if rng.random() < 0.5 else 0.0,
        contrast_last=bool(rng.random() < 0.5),
    )


def _saturate(values: np.ndarray) -> np.ndarray:
    """Round half away from zero and clamp to 0-255, as OpenCV's saturate_cast<uchar>."""
    return np.clip(np.sign(values) * np.floor(np.abs(values) + 0.5), 0, 255)


def _lut(table: np.ndarray) -> np.ndarray:
    return table.astype(np.uint8).reshape(256, 1)


def distort(image: np.ndarray, params: PhotometricParams) -> np.ndarray:
    """Apply a draw to ``[H, W, 3]`` uint8 RGB; returns a new ``[H, W, 3]`` uint8 array."""
    table = _IDENTITY
    if params.brightness:
        table = _saturate(table + params.brightness)
    if params.contrast != 1.0 and not params.contrast_last:
        table = _saturate(table * params.contrast)
    out = cv2.LUT(image, _lut(table)) if table is not _IDENTITY else image
    if params.saturation != 1.0 or params.hue:
        hsv = cv2.cvtColor(out, cv2.COLOR_RGB2HSV)
        hue = (_IDENTITY + round(params.hue)) % 180 if params.hue else _IDENTITY
        sat = _saturate(_IDENTITY * params.saturation)
        # One table per channel (H, S, V): entries of H past 179 never occur.
        tables = np.stack([hue, sat, _IDENTITY], axis=1).astype(np.uint8).reshape(256, 1, 3)
        out = cv2.cvtColor(cv2.LUT(hsv, tables), cv2.COLOR_HSV2RGB)
    if params.contrast != 1.0 and params.contrast_last:
        out = cv2.LUT(out, _lut(_saturate(_IDENTITY * params.contrast)))
    return out if out is not image else image.copy()
