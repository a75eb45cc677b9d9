"""Train an SSD on Ray (Ray Data + Ray Train), track it in MLflow, print its val mAP.

    python -m jobs.train --config configs/shapes_light.yaml [--set train.epochs=5 ...]
    ray job submit --working-dir . -- python -m jobs.train --config configs/voc_ssd300.yaml

Connects to the Ray cluster in RAY_ADDRESS (set by ``ray job submit``) or starts a local
one. Relative local paths are taken from the directory the job starts in; on a cluster
use a bucket for data and checkpoints and a tracking server (MLFLOW_TRACKING_URI or
tracking.uri). A run gets a unique name; pass it again (train.run_name) to resume.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

from pipeline.config import load_config, with_absolute_paths
from ssd_core.data.shards import with_scheme


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m jobs.train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", help="experiment YAML (defaults: the light model on generated shapes)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set train.lr=0.01 (repeatable)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        overrides = list(args.overrides)
        if os.environ.get("MLFLOW_TRACKING_URI") and not any(o.startswith("tracking.uri=") for o in overrides):
            overrides.insert(0, f"tracking.uri={os.environ['MLFLOW_TRACKING_URI']}")
        cfg = with_absolute_paths(load_config(args.config, overrides), Path.cwd())
        if cfg.train.run_name is None:  # a new run; reuse its name to resume it
            run_name = f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
            cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, run_name=run_name))
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"run {cfg.train.run_name}: checkpoints in {cfg.train.checkpoint_dir}/{cfg.train.run_name} "
          f"(resume with --set train.run_name={cfg.train.run_name})", flush=True)  # fmt: skip
    import ray

    from pipeline.ray_runtime import connect
    from pipeline.ray_train import train_on_ray

    started = connect(os.environ.get("RAY_ADDRESS"))  # False where tests or notebooks have connected
    try:
        result = train_on_ray(cfg)
    except ray.train.TrainingFailedError as err:
        print(f"error: training failed: {err}", file=sys.stderr)
        print(f"resume from the last checkpoint with --set train.run_name={cfg.train.run_name}", file=sys.stderr)
        return 1
    finally:
        if started:
            ray.shutdown()
    metrics = result.metrics or {}
    print(f"final val mAP@0.5 (VOC07): {metrics.get('val/mAP', float('nan')):.3f}")
    # As jobs.evaluate takes it: Ray names a checkpoint in a bucket without its scheme.
    checkpoint = with_scheme(result.checkpoint.path, cfg.train.checkpoint_dir) if result.checkpoint else None
    print(f"checkpoint: {checkpoint}")
    if metrics.get("mlflow_run_id"):
        print(f"MLflow run {metrics['mlflow_run_id']}, model {metrics['model_uri']}")
        if cfg.tracking.uri.startswith(("http://", "https://")):
            print(f"the MLflow UI: {cfg.tracking.uri}")
        else:
            print(f"open the MLflow UI: mlflow ui --backend-store-uri {cfg.tracking.uri}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
