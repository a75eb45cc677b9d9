"""Sweep SSD hyperparameters with Ray Tune (ASHA), each trial a Ray Train run, in MLflow.

    python -m jobs.sweep --config configs/sweep_shapes.yaml [--set num_samples=16 ...]
    python -m jobs.sweep --config configs/sweep_shapes.yaml --restore     # resume after a crash

The sweep is an MLflow parent run with one child run per trial; at the end the best
finished trial's registered model gets the sweep's alias (``champion``), and a summary
table and a plot of the metric against each hyperparameter are logged to the parent.
Connects to RAY_ADDRESS or starts a local Ray; MLFLOW_TRACKING_URI overrides the
experiment's tracking URI.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.sweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--config", required=True, help="sweep YAML")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a sweep key, e.g. --set num_samples=4 (repeatable)")  # fmt: skip
    parser.add_argument("--restore", action="store_true", help="resume the sweep of this name where it stopped")
    args = parser.parse_args(argv)
    from pipeline.sweep import load_sweep, run_sweep

    try:
        sweep = load_sweep(args.config, tuple(args.overrides))
    except (ValueError, FileNotFoundError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if os.environ.get("MLFLOW_TRACKING_URI"):
        sweep = dataclasses.replace(sweep, overrides=(f"tracking.uri={os.environ['MLFLOW_TRACKING_URI']}",
                                                      *sweep.overrides))  # fmt: skip
    import ray

    from pipeline.ray_runtime import connect

    started = connect(os.environ.get("RAY_ADDRESS"))  # False where tests or notebooks have connected
    try:
        outcome = run_sweep(sweep, Path.cwd(), restore=args.restore)
    except (FileExistsError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        if started:
            ray.shutdown()
    champion = outcome["champion"]
    if champion is None:
        print("no trial finished with a registered model", file=sys.stderr)
        return 1
    print(f"champion: trial {champion['trial']}, {sweep.metric} {champion['metric']:.4f}, "
          f"{champion.get('alias_uri', champion['model_uri'])}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
