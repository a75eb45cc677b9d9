import cv2
import numpy as np
import pytest

from ssd_core import augment
from ssd_core.augment import Geometry, SSDAugment, apply, resize_for_eval, sample_crop, sample_geometry, sample_rng
from ssd_core.photometric import PhotometricParams, distort


def scene(seed: int, width: int = 120, height: int = 90) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A gray image with solid, distinctly coloured rectangles and their boxes."""
    rng = np.random.default_rng(seed)
    image = np.full((height, width, 3), 128, np.uint8)
    boxes, labels = [], []
    for k in range(int(rng.integers(1, 5))):
        w, h = rng.integers(6, width // 2), rng.integers(6, height // 2)
        x, y = rng.integers(0, width - w), rng.integers(0, height - h)
        image[y : y + h, x : x + w] = [40 + 50 * k, 220 - 40 * k, 30 * k]
        boxes.append([x, y, x + w, y + h])
        labels.append(k + 1)
    return image, np.array(boxes, np.float32), np.array(labels)


@pytest.mark.parametrize("seed", range(60))
def test_outputs_are_valid_over_many_seeds(seed):
    image, boxes, labels = scene(seed)
    out, b, lab = SSDAugment(64)(image, boxes, labels, sample_rng(seed, 0, 0))
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    assert b.dtype == np.float32 and len(b) == len(lab)
    assert (b >= 0).all() and (b <= 1).all()
    assert ((b[:, 2:] - b[:, :2]) * 64 >= 1.0 - 1e-4).all()  # no degenerate box reaches the encoder
    assert set(lab.tolist()) <= set(labels.tolist())


def test_boxes_follow_the_pixels():
    """Without photometric distortion, each kept box frames its rectangle's colour."""

    def matching(pixels: np.ndarray, label: int) -> float:
        colour = np.array([40 + 50 * (label - 1), 220 - 40 * (label - 1), 30 * (label - 1)])
        return float((np.abs(pixels.astype(int) - colour).max(axis=-1) <= 2).mean())

    checked = 0
    for seed in range(40):
        image, boxes, labels = scene(seed, 160, 120)
        unoccluded = {
            int(lab) for (x1, y1, x2, y2), lab in zip(boxes.astype(int), labels)
            if matching(image[y1:y2, x1:x2], lab) == 1.0
        }  # fmt: skip
        geometry = sample_geometry(sample_rng(seed, 1, 0), 160, 120, boxes)
        out, b, lab = apply(image, boxes, labels, geometry, 96, (128, 128, 128))
        for (x1, y1, x2, y2), label in zip(b * 96, lab):
            if label not in unoccluded or min(x2 - x1, y2 - y1) < 5:
                continue
            inner = out[int(y1) + 2 : int(np.ceil(y2)) - 2, int(x1) + 2 : int(np.ceil(x2)) - 2]
            assert matching(inner, label) > 0.95, (seed, label)
            checked += 1
    assert checked > 30


def test_flip_is_a_mirror_and_twice_is_identity():
    image, boxes, labels = scene(3)
    base = Geometry(200, 150, 30, 20, (10, 5, 170, 140), False)
    a_img, a_box, _ = apply(image, boxes, labels, base, 80, (0, 0, 0))
    f_img, f_box, _ = apply(image, boxes, labels, Geometry(*list(base.__dict__.values())[:-1], True), 80, (0, 0, 0))
    assert np.array_equal(f_img[:, ::-1], a_img)
    mirrored = np.stack([1 - f_box[:, 2], f_box[:, 1], 1 - f_box[:, 0], f_box[:, 3]], 1)
    np.testing.assert_allclose(mirrored, a_box, atol=1e-6)


def test_crop_honours_the_iou_option(monkeypatch):
    monkeypatch.setattr(augment, "CROP_OPTIONS", (0.7,))
    boxes = np.array([[20, 20, 60, 50], [100, 10, 140, 90]], np.float32)
    for seed in range(50):
        x0, y0, x1, y1 = sample_crop(sample_rng(seed, 0, 0), 160, 120, boxes)
        if (x0, y0, x1, y1) == (0, 0, 160, 120):
            continue
        # scale >= 0.3 and aspect in [0.5, 2], up to truncating sides to whole pixels
        slack = 1 / (x1 - x0) + 1 / (y1 - y0)
        assert (x1 - x0) * (y1 - y0) >= 0.3**2 * 160 * 120 * (1 - slack)
        assert 0.5 * (1 - slack) <= ((x1 - x0) / 160) / ((y1 - y0) / 120) <= 2.0 * (1 + slack)
        iw = np.clip(np.minimum(boxes[:, 2], x1) - np.maximum(boxes[:, 0], x0), 0, None)
        ih = np.clip(np.minimum(boxes[:, 3], y1) - np.maximum(boxes[:, 1], y0), 0, None)
        iou = iw * ih / ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) + (x1 - x0) * (y1 - y0) - iw * ih)
        assert iou.max() >= 0.7


def test_empty_images_and_determinism():
    image, _, _ = scene(0)
    empty = np.zeros((0, 4), np.float32)
    out, b, lab = SSDAugment(48)(image, empty, np.zeros(0, np.int64), sample_rng(1, 0, 0))
    assert out.shape == (48, 48, 3) and b.shape == (0, 4) and len(lab) == 0
    image, boxes, labels = scene(5)
    a = SSDAugment(48)(image, boxes, labels, sample_rng(7, 3, 11))
    b = SSDAugment(48)(image, boxes, labels, sample_rng(7, 3, 11))
    c = SSDAugment(48)(image, boxes, labels, sample_rng(7, 4, 11))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_photometric_steps_by_hand():
    """Caffe's semantics on uint8: convertTo rounds half away from zero and saturates."""
    x = np.array([[[0, 100, 250], [10, 128, 255]]], np.uint8)
    np.testing.assert_array_equal(distort(x, PhotometricParams(brightness=10)), [[[10, 110, 255], [20, 138, 255]]])
    np.testing.assert_array_equal(distort(x, PhotometricParams(contrast=1.25)), [[[0, 125, 255], [13, 160, 255]]])
    # brightness then contrast, in that order: (10 + 10) * 0.5 = 10; (255 + 10 -> 255) * 0.5 = 127.5 -> 128
    both = distort(x, PhotometricParams(brightness=10, contrast=0.5))
    np.testing.assert_array_equal(both, [[[5, 55, 128], [10, 69, 128]]])
    gray = distort(np.array([[[200, 50, 10]]], np.uint8), PhotometricParams(saturation=0.0))
    assert gray[0, 0, 0] == gray[0, 0, 1] == gray[0, 0, 2] == 200  # S = 0: V in every channel
    red = np.array([[[255, 0, 0]]], np.uint8)
    np.testing.assert_array_equal(distort(red, PhotometricParams(hue=60)), [[[0, 255, 0]]])  # +120 degrees
    np.testing.assert_array_equal(distort(red, PhotometricParams(hue=-60)), [[[0, 0, 255]]])  # wraps to 240
    assert distort(x, PhotometricParams()) is not x and np.array_equal(distort(x, PhotometricParams()), x)


def test_photometric_orders_contrast_first_or_last():
    x = cv2.cvtColor(np.full((4, 4, 3), 0, np.uint8), cv2.COLOR_RGB2HSV)
    x[..., :] = (200, 80, 30)
    first = distort(x, PhotometricParams(contrast=1.5, saturation=1.4))
    last = distort(x, PhotometricParams(contrast=1.5, saturation=1.4, contrast_last=True))
    assert not np.array_equal(first, last)


def test_eval_resize():
    image, _, _ = scene(2)
    assert resize_for_eval(image, 300).shape == (300, 300, 3)
