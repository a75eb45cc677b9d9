"""MLflow tracking for rank 0: params, per-epoch metrics, artifacts, the registered model.

Tracking must never cost a training run: a failing call (server down, disk full) warns
once and turns tracking off for the rest of the run; the checkpoints still hold
everything. The default store is a SQLite file and an artifact folder on this machine;
a server is a URI away (``tracking.uri``).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pipeline.config import ExperimentConfig, TrackingConfig, to_dict


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"train": {"lr": 0.1}} -> {"train.lr": "0.1"}`` (MLflow params are strings)."""
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)
    return flat


def artifact_location(cfg: TrackingConfig) -> str | None:
    """Where a new experiment's artifacts go: ``tracking.artifacts`` as a URI; else the
    ``artifacts`` folder beside a SQLite store; else None, the store's own: a server's,
    which it serves (MLflow's default for a bare database, ``./mlruns``, would be the
    working folder of whichever process created the experiment)."""
    if cfg.artifacts is not None:
        return cfg.artifacts if "://" in cfg.artifacts else Path(cfg.artifacts).resolve().as_uri()
    if cfg.uri.startswith("sqlite:///"):
        return (Path(cfg.uri.removeprefix("sqlite:///")).parent / "artifacts").resolve().as_uri()
    return None


def _experiment_id(client: Any, cfg: TrackingConfig, name: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    return client.create_experiment(name, artifact_location=artifact_location(cfg))


def ensure_experiment(cfg: TrackingConfig, name: str, log: Callable[[str], None] = print) -> str | None:
    """Create the store (a SQLite file's tables) and the experiment from the driver, once,
    so that workers never race to create them; the experiment id, or None (with a
    warning) when the store cannot be reached."""
    try:
        from mlflow import MlflowClient

        return _experiment_id(MlflowClient(cfg.uri), cfg, name)
    except Exception as err:  # tracking must not stop training
        message = f"MLflow store {cfg.uri} unusable ({type(err).__name__}: {str(err).splitlines()[0]}); "
        message += "the workers will try again and train without tracking if it still fails"
        warnings.warn(message, stacklevel=2)
        log(f"warning: {message}")
        return None


class Tracker:
    """One MLflow run of one experiment (the config's name).

    Args:
        cfg: where to track; ``cfg.uri`` must be absolute (``sqlite:////abs/mlflow.db``,
            ``http://...``) since Ray moves processes between directories.
        experiment: experiment name.
        log: where warnings go besides ``warnings``.
        work: what goes on when tracking fails ("training", "evaluation"), for the warning.
    """

    def __init__(
        self, cfg: TrackingConfig, experiment: str, log: Callable[[str], None] = print, work: str = "training"
    ) -> None:
        self.cfg, self.experiment, self.log, self.work = cfg, experiment, log, work
        self.run_id: str | None = None
        self.enabled = cfg.enabled
        self._client: Any = None

    def _guard(self, what: str, fn: Callable[[], Any]) -> Any:
        if not self.enabled:
            return None
        try:
            return fn()
        except Exception as err:  # tracking must not stop training, whatever failed
            self.enabled = False
            message = f"MLflow tracking failed while {what} ({type(err).__name__}: {str(err).splitlines()[0]}); "
            message += f"{self.work} goes on without tracking"
            message += ", checkpoints keep everything" if self.work == "training" else ""
            warnings.warn(message, stacklevel=3)
            self.log(f"warning: {message}")
            return None

    def start(
        self, config: ExperimentConfig, run_id: str | None = None, tags: Mapping[str, str] | None = None,
        run_name: str | None = None,
    ) -> str | None:  # fmt: skip
        """Start a run (or continue ``run_id``, when resuming) and log the config as params;
        a new run is named ``run_name`` (by default the config's run name, else its name)
        and gets ``tags``."""

        def go() -> str:
            import mlflow
            from mlflow import MlflowClient

            mlflow.set_tracking_uri(self.cfg.uri)
            self._client = MlflowClient(self.cfg.uri)
            experiment_id = _experiment_id(self._client, self.cfg, self.experiment)
            if run_id is not None:
                self._client.update_run(run_id, status="RUNNING")
                return run_id
            run_tags = {"source": "ssd-ray", **(tags or {})}
            if self.cfg.parent_run_id:
                run_tags["mlflow.parentRunId"] = self.cfg.parent_run_id  # shown nested under the sweep's run
            name = run_name or config.train.run_name or config.name
            run = self._client.create_run(experiment_id, run_name=name, tags=run_tags)
            params = flatten(to_dict(config))
            from mlflow.entities import Param

            self._client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in params.items()])
            return run.info.run_id

        self.run_id = self._guard("starting the run", go)
        return self.run_id

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        def go() -> None:
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            items = [Metric(k, float(v), now, step) for k, v in metrics.items()]
            self._client.log_batch(self.run_id, metrics=items)

        self._guard(f"logging metrics of step {step}", go)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self._guard(f"logging {path}", lambda: self._client.log_artifact(self.run_id, str(path), artifact_path))

    def log_artifacts(self, folder: str | Path, artifact_path: str | None = None) -> None:
        self._guard(f"logging {folder}", lambda: self._client.log_artifacts(self.run_id, str(folder), artifact_path))

    def log_text(self, text: str, file: str) -> None:
        self._guard(f"logging {file}", lambda: self._client.log_text(self.run_id, text, file))

    def log_model(self, model: Any, config: ExperimentConfig, class_names: tuple[str, ...]) -> str | None:
        """Log and register the model (as ``tracking.model_name``, or the config's name);
        returns its ``models:/name/version`` URI."""

        def go() -> str:
            from pipeline.model_store import log_model

            name = self.cfg.model_name or config.name
            info = log_model(model, config, class_names, self.run_id, registered_model_name=name)
            version = getattr(info, "registered_model_version", None)
            return f"models:/{name}/{version}" if version is not None else info.model_uri

        return self._guard("logging the model", go)

    def end(self, status: str = "FINISHED") -> None:
        self._guard("ending the run", lambda: self._client.set_terminated(self.run_id, status))
