"""Pull the best SSD from MLflow to a local folder, verified to load.

    python -m jobs.pull_best --name shapes-light --alias champion --out models/champion
    python -m jobs.pull_best --experiment shapes-light --metric val/mAP --mode max --out models/best \\
        [--set-alias champion]

By registry alias (``--name`` + ``--alias``) or by a metric across an experiment's
finished runs. The folder holds ``weights.pt``, ``ssd.json`` and ``MLmodel``; it is
loaded back (priors and classes checked against its config) before the job says done,
and serves ``jobs.evaluate --model FOLDER`` and ``ssd_core`` directly. ``--tracking-uri``
(or MLFLOW_TRACKING_URI; default ``./mlruns/mlflow.db``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m jobs.pull_best", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI"))
    parser.add_argument("--name", help="registered model name (with --alias)")
    parser.add_argument("--alias", help="registry alias, e.g. champion")
    parser.add_argument("--experiment", help="experiment whose runs are searched (with --metric)")
    parser.add_argument("--metric", default="val/mAP")
    parser.add_argument("--mode", choices=("max", "min"), default="max")
    parser.add_argument("--out", required=True, help="local folder to write the model to")
    parser.add_argument("--set-alias", help="point NAME@ALIAS at the model found (NAME: --name, else the "
                        "name it is registered under, else the experiment's)")  # fmt: skip
    args = parser.parse_args(argv)
    if bool(args.alias) == bool(args.experiment):
        parser.error("give either --name and --alias, or --experiment (and --metric)")
    if args.alias and not args.name:
        parser.error("--alias needs --name")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # A server that is down should be an error in seconds, not after MLflow's long retries.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    import mlflow
    from mlflow import MlflowClient

    from jobs.paths import default_tracking_uri
    from pipeline.model_store import ModelLoadError
    from pipeline.registry import RegistryError, find_by_alias, find_by_metric, pull, register

    uri = default_tracking_uri(args.tracking_uri)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        print(f"error: no MLflow database at {uri.removeprefix('sqlite:///')}", file=sys.stderr)
        return 2
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    try:
        if args.alias:
            found = find_by_alias(client, args.name, args.alias)
        else:
            found = find_by_metric(client, args.experiment, args.metric, args.mode)
        model, config, class_names = pull(found, args.out)
        if args.set_alias:
            found = register(client, found, args.name or found.name or args.experiment, args.set_alias)
    except (RegistryError, ModelLoadError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    chosen = f" ({args.metric} {found.metric:.4f})" if found.metric is not None else ""
    print(f"best: {found.model_uri} from run {found.run_id}{chosen}")
    print(f"verified: {config.model.name}, {model.priors.shape[0]} priors, classes {', '.join(class_names)}")
    print(f"written to {Path(args.out).resolve()}")
    if args.set_alias:
        print(f"alias: models:/{found.name}@{args.set_alias} -> version {found.version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
