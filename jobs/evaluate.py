"""Evaluate a model on a split of prepared shards; print VOC and COCO metrics.

    python -m jobs.evaluate --model models:/shapes-light/1 --shards data/shards/shapes
    python -m jobs.evaluate --model runs/shapes-light-20261123-190000/epoch-0020 --shards ... --split val

``--model`` takes an MLflow model URI (``models:/name@alias``, ``runs:/<id>/model``), a saved
model folder, or a training checkpoint folder. ``--tracking-uri`` (or MLFLOW_TRACKING_URI)
says where ``models:/`` URIs live; by default the local ``mlruns/mlflow.db``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pipeline.config import EvalConfig
from pipeline.evaluation import evaluate_split, load_any
from pipeline.model_store import ModelLoadError
from ssd_core.data.record import DataError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--model", required=True)
    parser.add_argument("--shards", required=True, help="folder or URI of prepared shards")
    parser.add_argument("--split", default="val")
    parser.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI"))
    args = parser.parse_args(argv)
    if args.model.startswith(("models:/", "runs:/")):
        import mlflow

        uri = args.tracking_uri or f"sqlite:///{(Path.cwd() / 'mlruns' / 'mlflow.db').resolve()}"
        mlflow.set_tracking_uri(uri)
    shards = args.shards if "://" in args.shards else str(Path(args.shards).resolve())
    try:
        model, class_names = load_any(args.model)
        metrics = evaluate_split(model, class_names, shards, args.split, EvalConfig())
    except (DataError, ModelLoadError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{args.model} on {args.split}: VOC07 mAP@0.5 {metrics['voc/mAP']:.3f}, COCO AP {metrics['coco/AP']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
