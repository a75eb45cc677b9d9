"""The SSD training augmentation and the evaluation preprocessing, on uint8 ``[H, W, 3]``.

In the paper's order: photometric distortion, zoom-out (expand 1-4x, p=0.5, mean fill),
min-IoU crop (options none / 0.1 / 0.3 / 0.5 / 0.7 / 0.9 / free; side scale 0.3-1,
aspect 0.5-2; accepted when any box reaches the IoU; boxes kept when their centre is
inside, then clipped), horizontal flip, resize.

The geometry is composed before any pixel moves: the crop of the expanded canvas covers
one rectangle of the source image, and only that rectangle is resized, straight to its
place in the output, on a canvas of the fill colour. No 4x canvas is ever built, and the
photometric distortion runs on that small rectangle before it is pasted, so the fill
stays undistorted as in the paper's order (every photometric step is per pixel).

torchvision.transforms.v2 has RandomZoomOut and RandomIoUCrop, but its crop checks the
IoU only of boxes whose centre lies in the crop (Caffe checks every box) and retries on
the global RNG without bound; the sampling here follows Caffe and draws from a
per-sample generator, so (seed, epoch, index) fixes the output. Pixels are resized with
OpenCV's bilinear resize, as the original did. Images stay HWC, the layout
``torchvision.io.decode_jpeg`` returns under its CHW view and channels-last training wants.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ssd_core.photometric import PhotometricParams, distort, sample_photometric

CROP_OPTIONS: tuple[float | None, ...] = (None, 0.1, 0.3, 0.5, 0.7, 0.9, 0.0)  # None: whole image; 0.0: free
MAX_TRIALS = 50  # per option, as Caffe's batch samplers


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of one sample's augmentation: same (seed, epoch, index), same draw."""
    return np.random.default_rng(np.random.SeedSequence((seed, epoch, index)))


@dataclass(frozen=True)
class Geometry:
    """Where the output comes from, in pixels of the expanded canvas.

    The canvas is ``canvas_w x canvas_h`` with the source image at (``left``, ``top``);
    the output is the crop ``crop`` = (x0, y0, x1, y1) of the canvas, mirrored if ``flip``.
    """

    canvas_w: int
    canvas_h: int
    left: int
    top: int
    crop: tuple[int, int, int, int]
    flip: bool


def _first_acceptable(
    rng: np.random.Generator, width: int, height: int, boxes: np.ndarray, threshold: float
) -> tuple[int, int, int, int] | None:
    """The first of 50 random patches that meets ``threshold``, or None (one option's
    round of Caffe's sampler, the 50 trials drawn and checked at once)."""
    scale = rng.uniform(0.3, 1.0, MAX_TRIALS)
    aspect = np.sqrt(rng.uniform(np.maximum(0.5, scale**2), np.minimum(2.0, 1.0 / scale**2)))
    w = np.maximum(1, (width * scale * aspect).astype(np.int64))
    h = np.maximum(1, (height * scale / aspect).astype(np.int64))
    x0 = (rng.random(MAX_TRIALS) * (width - w)).astype(np.int64)
    y0 = (rng.random(MAX_TRIALS) * (height - h)).astype(np.int64)
    ok = (w <= width) & (h <= height)
    if len(boxes) == 0:
        ok &= threshold == 0.0  # only the free option crops an empty image
    else:
        x1, y1 = (x0 + w)[:, None], (y0 + h)[:, None]
        bx0, by0, bx1, by1 = boxes.T
        cx, cy = (bx0 + bx1) / 2, (by0 + by1) / 2
        inside = (cx > x0[:, None]) & (cx < x1) & (cy > y0[:, None]) & (cy < y1)
        inter = np.clip(np.minimum(bx1, x1) - np.maximum(bx0, x0[:, None]), 0, None) * np.clip(
            np.minimum(by1, y1) - np.maximum(by0, y0[:, None]), 0, None
        )
        union = (bx1 - bx0) * (by1 - by0) + (w * h)[:, None] - inter
        ok &= inside.any(axis=1) & ((inter / union).max(axis=1) >= threshold)
    hits = np.flatnonzero(ok)
    if not len(hits):
        return None
    t = hits[0]
    return int(x0[t]), int(y0[t]), int(x0[t] + w[t]), int(y0[t] + h[t])


def sample_crop(rng: np.random.Generator, width: int, height: int, boxes: np.ndarray) -> tuple[int, int, int, int]:
    """A min-IoU crop ``(x0, y0, x1, y1)`` of a ``width x height`` canvas (Caffe's rule).

    An option is drawn uniformly; up to 50 patches are tried for it (side scale s in
    [0.3, 1], aspect a in [max(0.5, s^2), min(2, 1/s^2)], width s*sqrt(a), height
    s/sqrt(a) of the canvas) and the first acceptable one is taken: some box reaches the
    option's IoU and some box has its centre inside. Drawing "none", or 10 options
    without success, gives the whole canvas.
    """
    for _ in range(10):
        option = CROP_OPTIONS[int(rng.integers(len(CROP_OPTIONS)))]
        if option is None:
            break
        patch = _first_acceptable(rng, width, height, boxes, option)
        if patch is not None:
            return patch
    return 0, 0, width, height


def sample_geometry(
    rng: np.random.Generator, width: int, height: int, boxes: np.ndarray, expand_max: float = 4.0
) -> Geometry:
    """Zoom-out (p=0.5, ratio 1-``expand_max``), then a min-IoU crop, then a flip (p=0.5)."""
    cw, ch, left, top = width, height, 0, 0
    if rng.random() < 0.5:
        ratio = rng.uniform(1.0, expand_max)
        cw, ch = int(width * ratio), int(height * ratio)
        left, top = int(rng.uniform(0, cw - width)), int(rng.uniform(0, ch - height))
    shifted = boxes + np.array([left, top, left, top], dtype=np.float32)
    crop = sample_crop(rng, cw, ch, shifted)
    return Geometry(cw, ch, left, top, crop, rng.random() < 0.5)


def apply(
    image: np.ndarray,
    boxes: np.ndarray,
    labels: np.ndarray,
    geometry: Geometry,
    size: int,
    fill: tuple[int, int, int],
    photometric: PhotometricParams | None = None,
    min_size: float = 1.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Produce the ``size x size`` output of one draw.

    Args:
        image: ``[H, W, 3]`` uint8 RGB.
        boxes: ``[N, 4]`` float32 xyxy pixels of ``image``; labels ``[N]``.
        fill: the zoom-out fill colour (the dataset mean, 0-255 RGB).
        min_size: boxes narrower or lower than this many output pixels are dropped
            (centre-in-crop boxes cut thin by the crop edge).

    Returns:
        ``(image [size, size, 3] uint8, boxes [M, 4] float32 xyxy normalised to [0, 1],
        labels [M])``, every box with positive width and height.
    """
    height, width = image.shape[:2]
    x0, y0, x1, y1 = geometry.crop
    # The source rectangle under the crop, in source pixels.
    sx0, sy0 = max(x0 - geometry.left, 0), max(y0 - geometry.top, 0)
    sx1, sy1 = min(x1 - geometry.left, width), min(y1 - geometry.top, height)
    ox0 = ox1 = oy0 = oy1 = 0
    out = None
    if sx1 > sx0 and sy1 > sy0:
        kx, ky = size / (x1 - x0), size / (y1 - y0)  # canvas -> output scale
        # Output pixels the rectangle lands on; boxes are mapped through the same rounding.
        ox0, ox1 = round((sx0 + geometry.left - x0) * kx), round((sx1 + geometry.left - x0) * kx)
        oy0, oy1 = round((sy0 + geometry.top - y0) * ky), round((sy1 + geometry.top - y0) * ky)
        if ox1 > ox0 and oy1 > oy0:
            region = cv2.resize(image[sy0:sy1, sx0:sx1], (ox1 - ox0, oy1 - oy0), interpolation=cv2.INTER_LINEAR)
            if photometric is not None:
                region = distort(region, photometric)
            # The region with a border of the fill colour: the output in one allocation.
            out = cv2.copyMakeBorder(
                region, oy0, size - oy1, ox0, size - ox1, cv2.BORDER_CONSTANT, value=tuple(int(v) for v in fill)
            )
    if out is None:
        out = np.empty((size, size, 3), dtype=np.uint8)
        out[:] = fill

    if len(boxes):
        # Keep boxes whose centre (in canvas pixels) is inside the crop; clip them to the
        # part of the source under the crop.
        b = boxes.astype(np.float64) + [geometry.left, geometry.top, geometry.left, geometry.top]
        cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
        keep = (cx > x0) & (cx < x1) & (cy > y0) & (cy < y1)
        ax, ay = sx0 + geometry.left, sy0 + geometry.top  # the rectangle's corner on the canvas
        b = b[keep]
        b[:, [0, 2]] = b[:, [0, 2]].clip(ax, sx1 + geometry.left)
        b[:, [1, 3]] = b[:, [1, 3]].clip(ay, sy1 + geometry.top)
        fx, fy = (ox1 - ox0) / max(sx1 - sx0, 1), (oy1 - oy0) / max(sy1 - sy0, 1)
        out_boxes = np.stack(
            [
                ox0 + (b[:, 0] - ax) * fx,
                oy0 + (b[:, 1] - ay) * fy,
                ox0 + (b[:, 2] - ax) * fx,
                oy0 + (b[:, 3] - ay) * fy,
            ],
            axis=1,
        )
        big = ((out_boxes[:, 2] - out_boxes[:, 0]) >= min_size) & ((out_boxes[:, 3] - out_boxes[:, 1]) >= min_size)
        out_boxes, out_labels = out_boxes[big], labels[keep][big]
    else:
        out_boxes, out_labels = np.zeros((0, 4)), labels[:0]

    if geometry.flip:
        out = cv2.flip(out, 1)
        out_boxes = np.stack([size - out_boxes[:, 2], out_boxes[:, 1], size - out_boxes[:, 0], out_boxes[:, 3]], 1)
    return out, (out_boxes / size).astype(np.float32).reshape(-1, 4), out_labels


@dataclass(frozen=True)
class SSDAugment:
    """The training augmentation: ``(image [H, W, 3] uint8, boxes [N, 4] px, labels [N])``
    -> ``(image [S, S, 3] uint8, boxes [M, 4] normalised xyxy, labels [M])``.

    ``fill`` is the zoom-out colour (0-255 RGB; the ImageNet mean by default).
    """

    size: int
    fill: tuple[int, int, int] = (124, 116, 104)
    expand_max: float = 4.0
    photometric: bool = True

    def __call__(
        self, image: np.ndarray, boxes: np.ndarray, labels: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        params = sample_photometric(rng) if self.photometric else None
        geometry = sample_geometry(rng, image.shape[1], image.shape[0], boxes, self.expand_max)
        return apply(image, boxes, labels, geometry, self.size, self.fill, params)


def resize_for_eval(image: np.ndarray, size: int) -> np.ndarray:
    """Evaluation preprocessing: ``[H, W, 3]`` uint8 -> ``[size, size, 3]`` uint8 (bilinear)."""
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)
