import numpy as np
import torch

from pipeline.samples import augment_sample, decode, to_model_input
from ssd_core.augment import resize_for_eval
from ssd_core.data.record import make_record
from ssd_core.models import ssd_light
from tests.ssd_core.data.fixtures import write_jpeg


def test_decode_gives_hwc_uint8(tmp_path):
    write_jpeg(tmp_path / "a.jpg", 40, 30)
    record = make_record("a", 40, 30, [], [], ("x",), image_bytes=(tmp_path / "a.jpg").read_bytes())
    image = decode(record)
    assert image.shape == (30, 40, 3) and image.dtype == np.uint8 and image.flags.c_contiguous


def test_flip_augmentation_mirrors_boxes_and_pixels_together():
    image = np.random.default_rng(0).integers(0, 256, (50, 100, 3), dtype=np.uint8)
    boxes = np.array([[10, 5, 30, 25]], np.float32)
    resized = resize_for_eval(image, 64)
    outs = [augment_sample("flip", image, boxes, np.array([1]), 64, 0, 0, i) for i in range(20)]
    normalised = {tuple(round(float(v), 3) for v in o[1][0]) for o in outs}
    assert normalised == {(0.1, 0.1, 0.3, 0.5), (0.7, 0.1, 0.9, 0.5)}
    for out, norm, _ in outs:
        mirrored = norm[0, 0] > 0.5
        expected = resized[:, ::-1] if mirrored else resized
        assert out.shape == (64, 64, 3) and out.flags.c_contiguous and np.array_equal(out, expected)


def test_model_input_normalised_and_channels_last():
    model = ssd_light(3)
    images = [np.full((128, 128, 3), 255, np.uint8), np.zeros((60, 90, 3), np.uint8)]
    x = to_model_input(images, model, channels_last=True)
    assert x.shape == (2, 3, 128, 128) and x.is_contiguous(memory_format=torch.channels_last)
    expected = (1.0 - torch.tensor(model.image_mean)) / torch.tensor(model.image_std)
    torch.testing.assert_close(x[0, :, 5, 5], expected)
