"""Ray Tune sweeps over the SSD hyperparameters the paper leaves open.

Each trial is a Tune function that fits a ``TorchTrainer`` through
:func:`pipeline.ray_train.train_on_ray` (the same per-worker loop as ``jobs.train``), with
Tune's report callback forwarding every epoch's metrics, so ASHA can stop a trial early
(and Ray Train, with ``ray[default]``'s state API, releases its workers). The sweep is an
MLflow parent run; each trial's run is its child. At the end the best finished trial's
registered model gets the ``champion`` alias, and a summary table and a plot of the
metric against each hyperparameter are logged to the parent run.

A sweep lives in ``{train.checkpoint_dir}/sweeps/{name}`` (a folder, or a bucket on a
cluster); ``Tuner.restore`` resumes it there after its driver died, without repeating
finished trials.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pipeline.config import ExperimentConfig, apply_overrides, from_dict, load_config, to_dict
from pipeline.local_train import prepare_data, print_now
from ssd_core.data.shards import resolve

STATE = "sweep_state.json"
TRIAL_CPU = 0.01  # what each trial's driver (the Tune function) reserves
KINDS = ("uniform", "loguniform", "choice", "randint", "grid")


@dataclass(frozen=True)
class SweepConfig:
    """A sweep: the experiment it starts from, the space, the budget, the scheduler.

    ``space`` maps dotted config keys to one distribution each: ``{uniform: [a, b]}``,
    ``{loguniform: [a, b]}``, ``{choice: [...]}``, ``{randint: [a, b]}``, or ``{grid:
    [...]}`` (every value, in order, ``num_samples`` times over; random search only).
    """

    name: str
    experiment: str  # path of the experiment YAML each trial starts from
    space: Mapping[str, Mapping[str, list]]
    overrides: tuple[str, ...] = ()  # applied to the experiment before the trial's values
    metric: str = "val/mAP"
    mode: str = "max"
    num_samples: int = 8
    max_concurrent_trials: int = 1  # trials at once; each one also needs its Train and Data CPUs
    search: str = "random"  # random (seeded) | optuna (pip install -e ".[sweep]")
    grace_period: int = 2  # ASHA: epochs before a trial can be stopped
    reduction_factor: int = 2
    alias: str = "champion"
    seed: int = 0


def load_sweep(path: str | Path, overrides: tuple[str, ...] = ()) -> SweepConfig:
    """A sweep YAML (relative ``experiment`` paths against the YAML's folder)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no sweep config at {path}")
    data = apply_overrides(yaml.safe_load(path.read_text()) or {}, overrides)
    known = {f.name for f in dataclasses.fields(SweepConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{path}: unknown sweep key {unknown[0]} (known: {', '.join(sorted(known))})")
    experiment = Path(data["experiment"])
    data["experiment"] = str(experiment if experiment.is_absolute() else (path.parent / experiment).resolve())
    data["overrides"] = tuple(data.get("overrides", ()))
    data["space"] = _dotted(data.get("space") or {})
    sweep = SweepConfig(**data)
    if sweep.search not in ("random", "optuna"):
        raise ValueError(f"{path}: search must be random or optuna, got {sweep.search!r}")
    for key, spec in sweep.space.items():
        if len(spec) != 1 or next(iter(spec)) not in KINDS:
            raise ValueError(f"{path}: space.{key} must be one of {', '.join(KINDS)}: {spec}")
        if next(iter(spec)) == "grid" and sweep.search != "random":
            raise ValueError(f"{path}: space.{key} is a grid, which only search: random takes")
    return sweep


def _dotted(space: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``--set space.loss.alpha=...`` nests the dotted config key: flatten it back."""
    out: dict[str, Any] = {}
    for key, spec in space.items():
        if isinstance(spec, Mapping) and spec and all(isinstance(v, Mapping) for v in spec.values()):
            out.update(_dotted(spec, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = spec
    return out


def search_space(space: Mapping[str, Mapping[str, list]]) -> dict[str, Any]:
    from ray import tune

    ranges = {"uniform": tune.uniform, "loguniform": tune.loguniform, "randint": tune.randint}  # take (low, high)
    values = {"choice": tune.choice, "grid": tune.grid_search}  # take the list
    out = {}
    for key, spec in space.items():
        kind, args = next(iter(spec.items()))
        out[key] = values[kind](list(args)) if kind in values else ranges[kind](*args)
    return out


def trial_config(base: dict, params: Mapping[str, Any], trial_id: str, parent_run_id: str | None) -> ExperimentConfig:
    """The experiment a trial trains: the base with the trial's values; validation every
    epoch (Tune needs the metric in every report), its own run name, a child MLflow run."""
    overrides = [f"{k}={json.dumps(v)}" for k, v in params.items()]
    # Quoted: YAML reads an id like 10845_00000 as the integer 1084500000.
    overrides += [f"train.run_name={json.dumps(trial_id)}", "train.checkpoint_every=1", "train.resume=true"]
    cfg = from_dict(apply_overrides(base, overrides))
    # The trial's driver holds TRIAL_CPU: its train workers take that much less, so a trial
    # reserves what the experiment says and no more (on 2 cores, 0.01 more left Ray Data
    # no CPU and the first trial waited for data.stall_timeout_s).
    t = cfg.train
    cpus = max(t.cpus_per_worker - TRIAL_CPU / t.num_workers, TRIAL_CPU)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(t, cpus_per_worker=round(cpus, 6)))
    return dataclasses.replace(cfg, tracking=dataclasses.replace(cfg.tracking, parent_run_id=parent_run_id))


def run_trial(params: dict[str, Any]) -> None:
    """The Tune trainable: fit one TorchTrainer with Tune's report callback."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from pipeline.ray_train import train_on_ray

    setup = params.pop("__sweep__")
    trial_id = tune.get_context().get_trial_id()
    base = setup["base"]  # a dict in sweeps started before it became a JSON string
    cfg = trial_config(json.loads(base) if isinstance(base, str) else base, params, trial_id, setup["parent_run_id"])
    train_on_ray(cfg, log=print_now, callbacks=[TuneReportCallback()])


def _parent_run(cfg: ExperimentConfig, sweep: SweepConfig, run_id: str | None) -> str | None:
    from pipeline.tracking import Tracker

    tracker = Tracker(cfg.tracking, cfg.name)
    name_cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, run_name=f"sweep-{sweep.name}"))
    found = tracker.start(name_cfg, run_id=run_id)
    if found and run_id is None:
        tracker.log_text(yaml.safe_dump(dataclasses.asdict(sweep), sort_keys=False), "sweep.yaml")
    return found


def sweeps_folder(cfg: ExperimentConfig) -> str:
    """Where sweeps keep their Tune state: ``{train.checkpoint_dir}/sweeps``, a folder or a
    bucket URI (a cluster's trials run on several nodes: Tune needs a bucket there)."""
    return f"{cfg.train.checkpoint_dir.rstrip('/')}/sweeps"


def read_state(folder: str) -> dict[str, Any] | None:
    """The sweep's own state (its MLflow parent run) in ``folder``, or None when there is none."""
    fs, root = resolve(folder)
    try:
        with fs.open_input_stream(f"{root}/{STATE}") as stream:
            return json.loads(stream.read())
    except FileNotFoundError:
        return None


def write_state(folder: str, state: dict[str, Any]) -> None:
    """Write the sweep's own state to ``folder`` (made if missing), for ``--restore``."""
    fs, root = resolve(folder)
    fs.create_dir(root, recursive=True)
    with fs.open_output_stream(f"{root}/{STATE}") as stream:
        stream.write(json.dumps(state).encode())


def build_tuner(sweep: SweepConfig, cfg: ExperimentConfig, parent_run_id: str | None, restore: bool) -> Any:
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    # A trial only drives its TorchTrainer, which reserves its own CPUs; a whole CPU per
    # driver would leave a 2-core machine none to train with (Tune refuses zero).
    trainable = tune.with_resources(run_trial, {"CPU": TRIAL_CPU})
    storage = sweeps_folder(cfg)
    if restore:
        return tune.Tuner.restore(f"{storage}/{sweep.name}", trainable=trainable, resume_unfinished=True,
                                  resume_errored=True)  # fmt: skip
    # The base travels in the param space, so that --restore trains what the sweep started
    # with; as one JSON string, so that Tune shows it as one row, not ~70.
    setup = {"base": json.dumps(to_dict(cfg)), "parent_run_id": parent_run_id}
    space = {**search_space(sweep.space), "__sweep__": setup}
    if sweep.search == "random":
        from ray.tune.search import BasicVariantGenerator

        # The same trials for the same seed. Tune ignores max_concurrent_trials when given
        # a generator, so the generator bounds them itself.
        search_alg = BasicVariantGenerator(random_state=sweep.seed, max_concurrent=sweep.max_concurrent_trials)
    elif sweep.search == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        search_alg = OptunaSearch(seed=sweep.seed)
    else:
        raise ValueError(f"search {sweep.search!r}: random or optuna")
    scheduler = ASHAScheduler(time_attr="epoch", max_t=cfg.train.epochs, grace_period=sweep.grace_period,
                              reduction_factor=sweep.reduction_factor)  # fmt: skip
    limit = None if sweep.search == "random" else sweep.max_concurrent_trials  # the generator has it
    return tune.Tuner(
        trainable, param_space=space,
        tune_config=tune.TuneConfig(metric=sweep.metric, mode=sweep.mode, num_samples=sweep.num_samples,
                                    max_concurrent_trials=limit, scheduler=scheduler,
                                    search_alg=search_alg),  # fmt: skip
        run_config=tune.RunConfig(name=sweep.name, storage_path=storage),
    )  # fmt: skip


def run_sweep(
    sweep: SweepConfig, base: Path, restore: bool = False, log: Callable[[str], None] = print_now
) -> dict[str, Any]:
    """Run (or resume) ``sweep``; returns ``{"rows": [...], "champion": {...} | None,
    "parent_run_id": ...}``. Relative paths of the experiment resolve against ``base``."""
    from pipeline.config import with_absolute_paths
    from pipeline.tracking import ensure_experiment

    cfg = with_absolute_paths(load_config(sweep.experiment, sweep.overrides), base)
    folder = f"{sweeps_folder(cfg)}/{sweep.name}"
    state = read_state(folder)
    if restore:
        if state is None:
            raise FileNotFoundError(f"no sweep to resume at {folder} ({STATE} missing)")
        parent = state["parent_run_id"]
    else:
        if state is not None:
            raise FileExistsError(f"sweep {sweep.name!r} exists at {folder}: resume it with --restore or rename it")
        prepare_data(cfg, log)  # once, here, not by concurrent trials
        if cfg.tracking.enabled:
            ensure_experiment(cfg.tracking, cfg.name, log)
        parent = _parent_run(cfg, sweep, None) if cfg.tracking.enabled else None
        write_state(folder, {"parent_run_id": parent, "sweep": sweep.name})
    results = build_tuner(sweep, cfg, parent, restore).fit()
    return summarise(results, sweep, cfg, parent, log)


def summarise(results: Any, sweep: SweepConfig, cfg: ExperimentConfig, parent: str | None,
              log: Callable[[str], None]) -> dict[str, Any]:  # fmt: skip
    """The table of trials, the champion alias, and the parent run's artifacts."""
    rows = []
    for result in results:
        metrics = result.metrics or {}
        params = {k: v for k, v in (result.config or {}).items() if k != "__sweep__"}
        rows.append({
            "trial": metrics.get("trial_id", Path(result.path).name), "params": params,
            "metric": metrics.get(sweep.metric), "epochs": metrics.get("epoch"), "model_uri": metrics.get("model_uri"),
            "error": str(result.error) if result.error else None,
        })  # fmt: skip
    finished = [r for r in rows if r["model_uri"] and r["metric"] is not None]
    better = max if sweep.mode == "max" else min
    champion = better(finished, key=lambda r: r["metric"]) if finished else None
    table = summary_table(rows, sweep)
    log(table)
    if champion is not None and cfg.tracking.enabled:
        from mlflow import MlflowClient

        name, version = champion["model_uri"].removeprefix("models:/").rsplit("/", 1)
        MlflowClient(cfg.tracking.uri).set_registered_model_alias(name, sweep.alias, version)
        champion["alias_uri"] = f"models:/{name}@{sweep.alias}"  # jobs.sweep prints it last
    if parent is not None:
        _log_summary(cfg, parent, sweep, rows, table, champion)
    return {"rows": rows, "champion": champion, "parent_run_id": parent}


def summary_table(rows: list[dict[str, Any]], sweep: SweepConfig) -> str:
    keys = list(sweep.space)
    lines = ["| trial | " + " | ".join(keys) + f" | {sweep.metric} | epochs |", "|" + " --- |" * (len(keys) + 3)]
    sign = -1.0 if sweep.mode == "max" else 1.0
    for r in sorted(rows, key=lambda r: (r["metric"] is None, sign * (r["metric"] or 0.0))):
        values = " | ".join(f"{r['params'].get(k):.4g}" if isinstance(r["params"].get(k), float)
                            else str(r["params"].get(k)) for k in keys)  # fmt: skip
        metric = f"{r['metric']:.4f}" if r["metric"] is not None else "-"
        lines.append(f"| {r['trial']} | {values} | {metric} | {r['epochs'] or '-'} |")
    return "\n".join(lines) + "\n"


def _log_summary(cfg: ExperimentConfig, parent: str, sweep: SweepConfig, rows: list[dict[str, Any]], table: str,
                 champion: dict | None) -> None:  # fmt: skip
    from matplotlib.figure import Figure

    from pipeline.tracking import Tracker

    tracker = Tracker(cfg.tracking, cfg.name)
    tracker.start(cfg, run_id=parent)
    tracker.log_text(table, "sweep_summary.md")
    keys = list(sweep.space)
    fig = Figure(figsize=(4 * len(keys), 3.5), dpi=100)
    scored = [r for r in rows if r["metric"] is not None]
    for i, key in enumerate(keys):
        axes = fig.add_subplot(1, len(keys), i + 1)
        axes.scatter([r["params"][key] for r in scored], [r["metric"] for r in scored])
        axes.set(xlabel=key, ylabel=sweep.metric)
        axes.grid(alpha=0.3)
    fig.tight_layout()
    with tempfile.TemporaryDirectory() as tmp:
        fig.savefig(Path(tmp) / "metric_vs_hyperparameters.png")
        tracker.log_artifact(Path(tmp) / "metric_vs_hyperparameters.png")
    if champion is not None:
        tracker.log_metrics({f"best/{sweep.metric}": champion["metric"]}, step=0)
    tracker.end()
