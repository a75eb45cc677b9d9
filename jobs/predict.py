"""Detect objects in a folder or bucket of images with Ray Data; write Parquet or JSON lines.

    python -m jobs.predict --model models:/shapes-light@champion --images data/shapes/val \\
        --out predictions/ [--format json] [--draw predictions/drawn] [--gpu --workers 4]

``--model``: an MLflow model URI, a pulled model folder or a training checkpoint folder.
One row per image: path, width, height, error, boxes (xyxy pixels of the image as it is
shown, turned by its EXIF orientation; flat), scores, labels, classes. Images that
cannot be decoded are listed at the end and in the output's ``error`` column; the rest
are predicted. Connects to RAY_ADDRESS or starts a local Ray; ``--tracking-uri`` (or
MLFLOW_TRACKING_URI; default ``./mlruns/mlflow.db``) for MLflow URIs.
"""

from __future__ import annotations

import argparse
import os
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.predict", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--model", required=True)
    parser.add_argument("--images", required=True, help="folder, file or URI (s3://...) of images")
    parser.add_argument("--out", required=True, help="output folder (or URI)")
    parser.add_argument("--format", choices=("parquet", "json"), default="parquet")
    parser.add_argument("--draw", help="also write the images with their boxes drawn to this folder or URI "
                        "(each at its path below --images, in its own format)")  # fmt: skip
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=1, help="model replicas (actors)")
    parser.add_argument("--gpu", action="store_true", help="one GPU per replica")
    parser.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI"))
    args = parser.parse_args(argv)

    import ray

    from jobs.paths import absolute, default_tracking_uri, is_mlflow_uri
    from pipeline.model_store import ModelLoadError
    from pipeline.predict import PredictRequest, predict_folder
    from pipeline.ray_runtime import connect

    tracking = default_tracking_uri(args.tracking_uri) if is_mlflow_uri(args.model) else None  # local: none needed
    request = PredictRequest(model=absolute(args.model), images=absolute(args.images), out=absolute(args.out),
                             tracking_uri=tracking, format=args.format, draw=absolute(args.draw),
                             batch_size=args.batch_size, workers=args.workers, use_gpu=args.gpu)  # fmt: skip
    started = connect(os.environ.get("RAY_ADDRESS"))  # False where tests or notebooks have connected
    try:
        summary = predict_folder(request)
    except (ValueError, FileNotFoundError, OSError, ModelLoadError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        if started:
            ray.shutdown()
    print(f"{summary['images']} images, {summary['detections']} detections -> {request.out} ({args.format})")
    for path, error in summary["failed"]:
        print(f"skipped {path}: {error}", file=sys.stderr)
    if summary["failed"]:
        print(f"{len(summary['failed'])} image(s) could not be read and were skipped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
