"""SSD models in MLflow as weights plus config: loading one never runs code from it.

A logged model is a directory with ``weights.pt`` (a plain state dict, read with
``torch.load(weights_only=True)``), ``ssd.json`` (the experiment config, class names and
the prior count) and an ``MLmodel`` file declaring the ``ssd_core`` flavor. Loading
rebuilds the model from the config with this project's code and then loads the weights,
so a model file from someone else cannot execute anything (MLflow's pytorch flavor would
unpickle a whole module).

This module is also the flavor module ``mlflow.models.Model.log`` calls ``save_model`` on.
"""

from __future__ import annotations

import json
import pickle
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from pipeline.builders import build_model
from pipeline.config import ExperimentConfig, from_dict, to_dict
from ssd_core.models.ssd import SSD

FLAVOR = "ssd_core"
WEIGHTS = "weights.pt"
SPEC = "ssd.json"


class ModelLoadError(RuntimeError):
    """A logged model that cannot be loaded back, with the reason and the location."""


def save_model(path: str | Path, mlflow_model: Any, model: SSD, config: ExperimentConfig,
               class_names: Sequence[str]) -> None:  # fmt: skip
    """Write ``model`` under ``path`` (MLflow's flavor hook; also usable on its own)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    # contiguous(): a channels-last model's weights are stored in the standard layout.
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    torch.save(state, path / WEIGHTS)
    spec = {
        "format": 1,
        "config": to_dict(config),
        "class_names": list(class_names),
        "num_classes": model.num_classes,
        "num_priors": int(model.priors.shape[0]),
    }
    (path / SPEC).write_text(json.dumps(spec, indent=2))
    if mlflow_model is not None:
        mlflow_model.add_flavor(FLAVOR, weights=WEIGHTS, spec=SPEC, format=1)
        mlflow_model.save(str(path / "MLmodel"))


def load_model_dir(path: str | Path, source: str | None = None) -> tuple[SSD, ExperimentConfig, tuple[str, ...]]:
    """``(model in eval mode, its config, class names)`` from a saved model directory;
    ``source``: what errors name instead of ``path`` (the URI a download came from).

    Raises:
        ModelLoadError: files missing, weights not a plain state dict, or a model whose
            priors or classes do not match its config.
    """
    path = Path(path)
    where = source or str(path)
    try:
        spec = json.loads((path / SPEC).read_text())
    except FileNotFoundError:
        raise ModelLoadError(f"{where}: no {SPEC}; is this an ssd_core model?") from None
    config = from_dict(spec["config"])
    class_names = tuple(spec["class_names"])
    if spec["num_classes"] != len(class_names) + 1:
        raise ModelLoadError(f"{where}: {spec['num_classes']} classes but {len(class_names)} names (+ background)")
    model = build_model(config.model, spec["num_classes"])
    if model.priors.shape[0] != spec["num_priors"]:
        raise ModelLoadError(
            f"{where}: config gives {model.priors.shape[0]} priors, the model had {spec['num_priors']}"
        )
    try:
        state = torch.load(path / WEIGHTS, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except FileNotFoundError:
        raise ModelLoadError(f"{where}: no {WEIGHTS}") from None
    except (RuntimeError, ValueError, pickle.UnpicklingError) as err:  # weights_only: tensors and containers only
        raise ModelLoadError(
            f"{where}: {WEIGHTS} is not a matching plain state dict ({str(err).splitlines()[0]})"
        ) from None
    return model.eval(), config, class_names


def load_model(model_uri: str) -> tuple[SSD, ExperimentConfig, tuple[str, ...]]:
    """Load from any MLflow model URI (``models:/name@alias``, ``runs:/<id>/model``,
    ``models:/<model_id>``) or a local directory."""
    if Path(model_uri).is_dir():
        return load_model_dir(model_uri)
    import mlflow

    try:
        local = mlflow.artifacts.download_artifacts(artifact_uri=model_uri)
    except Exception as err:  # MlflowException and transport errors alike
        raise ModelLoadError(f"{model_uri}: cannot download ({str(err).splitlines()[0]})") from None
    return load_model_dir(local, source=model_uri)


def log_model(model: SSD, config: ExperimentConfig, class_names: Sequence[str], run_id: str,
              registered_model_name: str | None = None) -> Any:  # fmt: skip
    """Log (and optionally register) ``model`` in run ``run_id``, as a logged model of the
    run's experiment; returns MLflow's ModelInfo."""
    from mlflow import MlflowClient
    from mlflow.models import Model

    # Made here, in the run's experiment: Model.log would make it in the process's current
    # experiment, "Default" (id 0) in a Ray worker, whose artifact root is a local ./mlruns.
    client = MlflowClient()
    run = client.get_run(run_id)
    logged = client.create_logged_model(run.info.experiment_id, name="model", source_run_id=run_id,
                                        params=dict(run.data.params))  # fmt: skip
    return Model.log(
        artifact_path=None, name="model", flavor=sys.modules[__name__], run_id=run_id, model_id=logged.model_id,
        registered_model_name=registered_model_name, model=model, config=config, class_names=class_names,
    )  # fmt: skip
