"""Training preprocessing throughput on one core: decode + augment + encode vs decode.

    python -m benchmarks.data [--quick]

The JPEGs are VOC-sized (500x375, quality 90) generated-shapes images with textured
backgrounds; the augmentation is the full SSD one at 300x300 and the targets are SSD300's
(encoded in batches of 32, as the data workers do). Prints both rates and the ratio last.
"""

from __future__ import annotations

import argparse
import io
import time

import cv2
import numpy as np
import torch
from PIL import Image
from torchvision.io import decode_jpeg

from ssd_core.augment import SSDAugment, sample_rng
from ssd_core.data.shapes import draw_sample
from ssd_core.matching import TargetEncoder
from ssd_core.models import ssd300_vgg16


def voc_sized_jpegs(count: int) -> list[tuple[bytes, np.ndarray, np.ndarray]]:
    out = []
    for i in range(count):
        sample = draw_sample(11, i, image_size=500, max_objects=8)
        image = sample.image[:375]  # 500 wide, 375 high, as most VOC images
        keep = sample.boxes[:, 3] <= 375
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="JPEG", quality=90)
        out.append((buf.getvalue(), sample.boxes[keep], sample.labels[keep]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    data = voc_sized_jpegs(64)
    tensors = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b, _, _ in data]
    model = ssd300_vgg16()
    encoder = TargetEncoder(model.priors, prior_spec=model.prior_spec)
    augment = SSDAugment(300)
    rounds = 2 if args.quick else 6

    def decode_only() -> None:
        for t in tensors:
            decode_jpeg(t)

    def full(epoch: int) -> None:
        for start in range(0, len(data), 32):
            boxes, labels = [], []
            for i in range(start, min(start + 32, len(data))):
                image = decode_jpeg(tensors[i]).permute(1, 2, 0).numpy()  # HWC view, no copy
                _, b, lab = augment(image, data[i][1], data[i][2], sample_rng(0, epoch, i))
                boxes.append(torch.from_numpy(b))
                labels.append(torch.from_numpy(lab))
            encoder.encode_batch(boxes, labels)

    decode_only()
    full(0)
    best_decode = min(_timed(decode_only) for _ in range(rounds))
    best_full = min(_timed(lambda e=e: full(e)) for e in range(1, rounds + 1))
    n = len(data)
    decode_rate, full_rate = n / best_decode, n / best_full
    print(
        f"{'decode + augment + encode (1 core, SSD300)':<44} ours {full_rate:8.0f} img/s   "
        f"{'decode only (torchvision.io)':<30} {decode_rate:8.0f} img/s   target >=0.50   "
        f"ratio {full_rate / decode_rate:5.2f}"
    )


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
