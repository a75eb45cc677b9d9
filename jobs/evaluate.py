"""Evaluate a model on a split of prepared shards; print VOC and COCO metrics.

    python -m jobs.evaluate --model models:/shapes-light/1 --shards data/shards/shapes
    python -m jobs.evaluate --model runs/shapes-light-20261123-190000/epoch-0020 --shards ... --split val

``--model`` takes an MLflow model URI (``models:/name@alias``, ``runs:/<id>/model``), a saved
model folder, or a training checkpoint folder. ``--tracking-uri`` (or MLFLOW_TRACKING_URI)
says where ``models:/`` URIs live; by default the local ``mlruns/mlflow.db``.

The metrics are also logged there, as an MLflow run named ``evaluate-<split>`` in the
model's experiment (its config's name), tagged with what was evaluated, with the AP table;
``--no-log`` skips that. A tracking store that cannot be reached warns; the metrics are
printed all the same.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

from jobs.paths import absolute, default_tracking_uri, is_mlflow_uri
from pipeline.config import EvalConfig, TrackingConfig
from pipeline.evaluation import evaluate_split, load_any_with_config, log_evaluation
from pipeline.model_store import ModelLoadError
from pipeline.progress import progress_printer
from ssd_core.data.record import DataError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--model", required=True)
    parser.add_argument("--shards", required=True, help="folder or URI of prepared shards")
    parser.add_argument("--split", default="val")
    parser.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI"))
    parser.add_argument("--no-log", action="store_true", help="print the metrics only; log nothing to MLflow")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ...; auto: cuda when there is one")
    args = parser.parse_args(argv)
    uri = default_tracking_uri(args.tracking_uri)
    if is_mlflow_uri(args.model):
        import mlflow

        mlflow.set_tracking_uri(uri)
    shards, model_source = absolute(args.shards), absolute(args.model)
    try:
        device = pick_device(args.device)
        model, config, class_names = load_any_with_config(model_source)
        metrics, table = evaluate_split(model.to(device), class_names, shards, args.split, EvalConfig(),
                                        progress=progress_printer(f"evaluating {args.split} on {device}"),
                                        device=device)  # fmt: skip
    except (DataError, ModelLoadError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{args.model} on {args.split}: VOC07 mAP@0.5 {metrics['voc/mAP']:.3f}, COCO AP {metrics['coco/AP']:.3f}")
    if not args.no_log:
        # A new experiment's artifacts go beside a local SQLite store, or where a server keeps them.
        tracking = TrackingConfig(uri=uri)
        run_id = log_evaluation(tracking, config, model_source, shards, args.split, metrics, table)
        if run_id is not None:
            print(f"logged to MLflow run {run_id} (experiment {config.name}) at {uri}")
    return 0


def pick_device(name: str) -> torch.device:
    """``auto``: the first GPU when there is one; a named device must exist here."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"--device {name!r}: {err}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name!r}: this machine has no CUDA GPU (use cpu or auto)")
    return device


if __name__ == "__main__":
    sys.exit(main())
