"""Train an SSD and print its validation mAP.

    python -m jobs.train --config configs/shapes_light.yaml [--set train.epochs=5 ...]

For now this trains in this process (pipeline.local_train): the generated shapes set (or
prepared shards) through the real data path, the SSD augmentation and the paper's loss.
The pipeline issue moves it onto Ray Train with MLflow tracking, with the same arguments.
Relative data paths are taken from the directory the job starts in.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from pipeline.config import load_config, with_absolute_paths
from pipeline.local_train import train_locally


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
        cfg = with_absolute_paths(load_config(args.config, args.overrides), Path.cwd())
        if cfg.train.run_name is None:  # a new run; reuse its name to resume it
            run_name = f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
            cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, run_name=run_name))
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"run {cfg.train.run_name}: checkpoints in {cfg.train.checkpoint_dir}/{cfg.train.run_name} "
          f"(resume with --set train.run_name={cfg.train.run_name})", flush=True)  # fmt: skip
    result = train_locally(cfg)
    print(f"final val mAP@0.5 (VOC07): {result['val_mAP']:.3f}")
    if result["run_id"]:
        print(f"MLflow run {result['run_id']}, model {result['model_uri']}")
        print(f"open the MLflow UI: mlflow ui --backend-store-uri {cfg.tracking.uri}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
