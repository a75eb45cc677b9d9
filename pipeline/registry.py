"""Finding the best model in MLflow and pulling it to a local folder, verified.

The best model is either what a registry alias points at (``champion`` after a sweep)
or the model of the run with the best value of a metric across an experiment's runs.
Pulling downloads the model folder and loads it back with :func:`load_model_dir`, which
rebuilds the model from its config and checks the priors and classes against it, so a
pulled folder is known to work before anyone serves it.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.config import ExperimentConfig
from pipeline.model_store import load_model_dir
from ssd_core.models.ssd import SSD


class RegistryError(RuntimeError):
    """No such experiment, run, metric, model or alias, or no reachable tracking server."""


@dataclass(frozen=True)
class FoundModel:
    model_uri: str  # models:/name/version when registered, else models:/<logged model id>
    run_id: str
    name: str | None = None  # registered model name and version, when registered
    version: str | None = None
    metric: float | None = None  # the value it was chosen by (metric search)


def _unreachable(uri: str, err: Exception) -> RegistryError:
    return RegistryError(f"tracking server {uri} cannot be reached or answered an error "
                         f"({type(err).__name__}: {str(err).splitlines()[0]})")  # fmt: skip


def find_by_alias(client: Any, name: str, alias: str) -> FoundModel:
    """The version registered model ``name`` has under ``alias``."""
    from mlflow.exceptions import MlflowException

    try:
        version = client.get_model_version_by_alias(name, alias)
    except MlflowException as err:
        if "RESOURCE_DOES_NOT_EXIST" in str(err.error_code) or "not found" in str(err).lower():
            raise RegistryError(f"registered model {name!r} has no alias {alias!r} (or does not exist)") from None
        raise _unreachable(client.tracking_uri, err) from None
    return FoundModel(f"models:/{name}/{version.version}", version.run_id, name, str(version.version))


def find_by_metric(client: Any, experiment: str, metric: str = "val/mAP", mode: str = "max") -> FoundModel:
    """The model of the finished run of ``experiment`` with the best ``metric``."""
    if mode not in ("max", "min"):
        raise ValueError(f"mode {mode!r}: use max or min")
    try:
        found = client.get_experiment_by_name(experiment)
    except Exception as err:
        raise _unreachable(client.tracking_uri, err) from None
    if found is None:
        names = ", ".join(sorted(e.name for e in client.search_experiments())) or "none"
        raise RegistryError(f"no experiment {experiment!r} at {client.tracking_uri} (have: {names})")
    runs = client.search_runs(
        [found.experiment_id], filter_string=f"metrics.`{metric}` > -1e300 and attributes.status = 'FINISHED'",
        order_by=[f"metrics.`{metric}` {'DESC' if mode == 'max' else 'ASC'}"], max_results=1,
    )  # fmt: skip
    if not runs:
        raise RegistryError(f"no finished run of experiment {experiment!r} has the metric {metric!r}")
    run = runs[0]
    value = run.data.metrics[metric]
    versions = client.search_model_versions(f"run_id='{run.info.run_id}'")
    if versions:
        v = max(versions, key=lambda v: int(v.version))
        return FoundModel(f"models:/{v.name}/{v.version}", run.info.run_id, v.name, str(v.version), value)
    logged = client.search_logged_models(experiment_ids=[found.experiment_id],
                                         filter_string=f"source_run_id = '{run.info.run_id}'")  # fmt: skip
    if not logged:
        raise RegistryError(f"run {run.info.run_id} ({metric} {value:.4f}) logged no model")
    return FoundModel(f"models:/{logged[0].model_id}", run.info.run_id, metric=value)


def pull(found: FoundModel, out: str | Path) -> tuple[SSD, ExperimentConfig, tuple[str, ...]]:
    """Download ``found`` into ``out`` (replaced if it exists) and load it back, verified."""
    import mlflow

    out = Path(out)
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        mlflow.artifacts.download_artifacts(artifact_uri=found.model_uri, dst_path=str(partial))
    except Exception as err:
        shutil.rmtree(partial, ignore_errors=True)
        raise RegistryError(f"{found.model_uri}: download failed ({str(err).splitlines()[0]})") from None
    loaded = load_model_dir(partial)  # ModelLoadError names what does not match
    shutil.rmtree(out, ignore_errors=True)
    partial.rename(out)
    return loaded


def register(client: Any, found: FoundModel, name: str, alias: str) -> FoundModel:
    """Point ``name@alias`` at ``found`` (registering it under ``name`` first if needed)."""
    import mlflow

    if found.name != name or found.version is None:
        # From the logged model itself (not models:/other/N), so the version keeps its run.
        source = client.get_model_version(found.name, found.version).source if found.version else found.model_uri
        version = mlflow.register_model(source, name).version
        found = FoundModel(f"models:/{name}/{version}", found.run_id, name, str(version), found.metric)
    client.set_registered_model_alias(name, alias, found.version)
    return found
