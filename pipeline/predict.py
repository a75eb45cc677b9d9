"""Batch inference with Ray Data: a folder or bucket of images in, detections out.

Files are listed and read by Ray Data (``read_binary_files``: any count, local or
``s3://``), decoded and resized, and run through the model in batches on an actor pool
(the model is loaded once per actor; one GPU each when ``use_gpu``). Detections are
decoded and NMS-ed on the actor and given in the original image's pixels, as it is shown
(turned by its EXIF orientation). An image that cannot be decoded becomes a row with its
``error`` set: it is reported and skipped, never silently dropped.

Output rows, one per image: ``path`` (a URI for images in a bucket), ``width``,
``height``, ``error`` and the lists ``boxes`` (xyxy pixels, 4 per detection, flat),
``scores``, ``labels``, ``classes``.
With ``draw``, a copy of each image with its boxes drawn is written at the image's path
below the images root (local or a bucket, through pyarrow's filesystems).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pyarrow as pa
import ray
import ray.data
import torch
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms.v2.functional import to_dtype

from pipeline.config import EvalConfig
from pipeline.engine import detect_resized
from ssd_core.augment import resize_for_eval
from ssd_core.data.shards import resolve, with_scheme

IMAGE_EXTENSIONS = ["jpg", "jpeg", "png", "bmp", "JPG", "JPEG", "PNG"]
# Explicit, so that a block whose images have no detections still writes list<float>.
SCHEMA = pa.schema([
    ("path", pa.string()), ("width", pa.int32()), ("height", pa.int32()), ("error", pa.string()),
    ("boxes", pa.list_(pa.float32())), ("scores", pa.list_(pa.float32())), ("labels", pa.list_(pa.int64())),
    ("classes", pa.list_(pa.string())),
])  # fmt: skip


@dataclass(frozen=True)
class PredictRequest:
    """What to run. ``model``: an MLflow model URI, a pulled model folder or a training
    checkpoint folder (see :func:`pipeline.evaluation.load_any`)."""

    model: str
    images: str
    out: str
    tracking_uri: str | None = None
    format: str = "parquet"  # parquet | json
    # Folder or URI for copies of the images with their boxes drawn, at their paths below
    # ``images`` and in their own format. Absolute: the replicas run in other directories
    # (and, on a cluster, other nodes: use a bucket there).
    draw: str | None = None
    min_draw_score: float = 0.3
    batch_size: int = 16
    workers: int = 1
    use_gpu: bool = False
    eval: EvalConfig = EvalConfig()


def decode_file(data: bytes) -> np.ndarray:
    """Encoded bytes -> uint8 ``[H, W, 3]`` RGB as the image is shown: turned by its EXIF
    orientation (a phone's portrait photo is stored sideways; boxes in the stored frame
    would not fit the picture its owner sees), grayscale expanded, alpha dropped, 16-bit
    PNGs scaled down to 8 bits (the model was trained on 8-bit images)."""
    encoded = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    image = decode_image(encoded, mode=ImageReadMode.RGB, apply_exif_orientation=True)
    if image.dtype != torch.uint8:
        image = to_dtype(image, torch.uint8, scale=True)
    return np.ascontiguousarray(image.permute(1, 2, 0).numpy())


class Detector:
    """``map_batches`` actor: ``{bytes, path}`` rows -> one detection row per image."""

    def __init__(self, request: PredictRequest) -> None:
        if request.tracking_uri:
            import mlflow

            mlflow.set_tracking_uri(request.tracking_uri)
        from pipeline.evaluation import load_any

        self.request = request
        self.device = torch.device("cuda" if request.use_gpu and torch.cuda.is_available() else "cpu")
        model, self.class_names = load_any(request.model)
        self.model = model.to(self.device).eval()
        if request.draw:  # once per replica, not per image: an S3 filesystem resolves credentials
            self.draw_fs, self.draw_root = resolve(request.draw)

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        size = self.model.image_size
        rows: list[dict[str, Any]] = []
        images, sizes, where = [], [], []
        for data, path in zip(batch["bytes"], batch["path"]):
            # The image as it can be opened: Ray Data drops a bucket's scheme (bucket/key).
            row = {"path": with_scheme(str(path), self.request.images), "width": 0, "height": 0, "error": None,
                   "boxes": [], "scores": [], "labels": [], "classes": []}  # fmt: skip
            try:
                image = decode_file(data)
            except RuntimeError as err:  # torchvision's decoders raise RuntimeError on bad data
                row["error"] = f"cannot decode: {str(err).splitlines()[0]}"
            else:
                row["height"], row["width"] = image.shape[:2]
                images.append(resize_for_eval(image, size))
                sizes.append(image.shape[:2])
                where.append((len(rows), image))
            rows.append(row)
        if images:
            found = detect_resized(self.model, torch.from_numpy(np.stack(images)), sizes, self.request.eval,
                                   device=self.device)  # fmt: skip
            for (i, image), det in zip(where, found):
                labels = det["labels"].tolist()
                rows[i].update(boxes=det["boxes"].reshape(-1).tolist(), scores=det["scores"].tolist(), labels=labels,
                               classes=[self.class_names[k - 1] for k in labels])  # fmt: skip
                if self.request.draw:
                    self._draw(image, rows[i])
        return pa.Table.from_pylist(rows, schema=SCHEMA)

    def _draw(self, image: np.ndarray, row: dict[str, Any]) -> None:
        canvas = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        boxes = np.asarray(row["boxes"], np.float32).reshape(-1, 4)
        for box, score, name in zip(boxes, row["scores"], row["classes"]):
            if score < self.request.min_draw_score:
                continue
            x0, y0, x1, y1 = (int(round(v)) for v in box)
            cv2.rectangle(canvas, (x0, y0), (x1, y1), (0, 200, 255), 2)
            cv2.putText(canvas, f"{name} {score:.2f}", (x0, max(y0 - 3, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                        (0, 200, 255), 1)  # fmt: skip
        relative = drawn_name(row["path"], self.request.images)
        # The file's own format (by extension), so that a.jpg and a.png stay two files.
        ok, encoded = cv2.imencode(Path(relative).suffix.lower(), canvas)
        if not ok:
            raise RuntimeError(f"could not encode the drawn copy of {row['path']}")
        target = f"{self.draw_root.rstrip('/')}/{relative}"
        self.draw_fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
        with self.draw_fs.open_output_stream(target) as stream:
            stream.write(encoded.tobytes())


def drawn_name(path: str, images: str) -> str:
    """Where the drawn copy of the image at ``path`` (a URI for a bucket's images) goes
    below the draw folder: its path below the ``images`` root, so that images of the same
    name in two subfolders stay two files."""
    root = images.rstrip("/")
    if path.startswith(root + "/"):
        return path[len(root) + 1 :]
    return path.rsplit("/", 1)[-1]  # ``images`` named the file itself


def predict_folder(request: PredictRequest) -> dict[str, Any]:
    """Run ``request`` on the connected Ray cluster; writes ``request.out`` and returns
    ``{"images": n, "detections": n, "failed": [(path, error), ...]}``."""
    if request.format not in ("parquet", "json"):
        raise ValueError(f"format {request.format!r}: use parquet or json")
    if request.draw and "://" not in request.draw and not Path(request.draw).is_absolute():
        raise ValueError(f"draw folder {request.draw!r} must be absolute or a URI: the replicas run elsewhere")
    # Load once here: a bad model URI fails now, with its message, not inside an actor.
    Detector(dataclasses.replace(request, draw=None, use_gpu=False))
    files = ray.data.read_binary_files(request.images, include_paths=True, file_extensions=IMAGE_EXTENSIONS)
    results = files.map_batches(
        Detector, fn_constructor_kwargs={"request": request}, batch_size=request.batch_size,
        compute=ray.data.ActorPoolStrategy(size=request.workers), num_gpus=1 if request.use_gpu else 0,
        batch_format="numpy",
    ).materialize()  # fmt: skip
    if request.format == "parquet":
        results.write_parquet(request.out)
    else:
        results.write_json(request.out)
    summary = results.map_batches(
        lambda b: {"n": [len(s) for s in b["scores"]], "error": list(b["error"]), "path": list(b["path"])},
        batch_format="numpy",
    ).take_all()  # fmt: skip
    failed = [(r["path"], r["error"]) for r in summary if r["error"]]
    return {"images": len(summary), "detections": int(sum(r["n"] for r in summary)), "failed": failed}
