import numpy as np

from ssd_core.data.shapes import SHAPE_CLASSES, draw_sample, generate_shapes


def test_deterministic_from_seed():
    a, b = draw_sample(3, 7), draw_sample(3, 7)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.boxes, b.boxes)
    assert not np.array_equal(draw_sample(4, 7).image, a.image)


def test_boxes_valid_and_varied():
    samples = generate_shapes(200, seed=1, image_size=96)
    boxes = np.concatenate([s.boxes for s in samples])
    labels = np.concatenate([s.labels for s in samples])
    assert (boxes[:, 2:] > boxes[:, :2]).all()
    assert boxes.min() >= 0 and boxes.max() <= 96
    assert set(labels.tolist()) == set(range(1, len(SHAPE_CLASSES) + 1))
    sides = np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    assert sides.min() < 12 and sides.max() > 50  # tiny to most of the image
    assert any(len(s.labels) == 0 for s in samples)
    assert all(s.image.shape == (96, 96, 3) and s.image.dtype == np.uint8 for s in samples)
