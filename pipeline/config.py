"""The experiment config: one tree of frozen dataclasses, from YAML and ``--set`` overrides.

It crosses process boundaries (Ray workers, Tune trials, MLflow params) as a plain dict
(:func:`to_dict` / :func:`from_dict`) and is rebuilt on the other side. Unknown keys are
errors that name the key, so a typo in a YAML file or an override never passes silently.
"""

from __future__ import annotations

import contextlib
import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True)
class ModelConfig:
    """Which SSD and its default boxes. ``scales`` (m + 1 values) wins over the range."""

    name: str = "light"  # light | ssd300 | ssd512
    image_size: int = 128  # light only; SSD300/512 fix their own
    width: float = 1.0  # light only
    batch_norm: bool = False  # ssd300/ssd512: BN backbone for training from scratch
    s_min: float | None = None  # None: the model's own default scales
    s_max: float | None = None
    first_scale: float | None = None
    scales: tuple[float, ...] | None = None
    # ssd300/ssd512: a torchvision vgg16 (or vgg16_bn with batch_norm) ImageNet state-dict
    # file, loaded into the backbone at the start of a fresh run (fc6/fc7 decimated as the
    # paper). A path every train worker can read. None: train from scratch.
    backbone_weights: str | None = None


@dataclass(frozen=True)
class DataConfig:
    """Where images come from and how they are augmented.

    ``source``: ``shapes`` (generated into ``root`` on first use) or ``shards`` (already
    prepared by ``jobs/prepare_data.py``). ``shards`` is the folder or URI of the Parquet
    shards (written there for ``shapes``). ``augment``: ``ssd`` (the paper's) or ``flip``.
    Relative paths are resolved by the job against the directory it starts in.
    """

    source: str = "shapes"
    root: str = "data/shapes"
    shards: str = "data/shards/shapes"
    augment: str = "ssd"
    num_train: int = 2000
    num_val: int = 300
    seed: int = 0
    shapes_image_size: int = 128
    shapes_max_objects: int = 6
    # Ray Data: how many tasks decode, augment and encode at once, and the CPUs each takes.
    workers: int = 1
    cpus_per_worker: float = 1.0
    map_batch_size: int = 64  # images per transform call (encoding is vectorised per batch)
    # Rows in each train worker's local shuffle buffer, on top of a fresh shard order every
    # epoch. An epoch's first batch waits for the buffer to fill: 2,048 rows cost ~1.5 s
    # an epoch on 2 cores (measured), 512 ~0.5 s.
    shuffle_buffer: int = 512
    # Hand the training stream to the train worker in the order the reads were planned,
    # whichever Ray Data task finishes first: with one train worker, the run is then the
    # same every time from its seeds even when several data tasks run at once (with one
    # at a time it is anyway). A late task holds back the ones after it.
    preserve_order: bool = False
    # No batch for this long means the pipeline is starved or stuck: fail with the
    # cluster's resources named instead of waiting forever.
    stall_timeout_s: float = 600.0


@dataclass(frozen=True)
class LossConfig:
    alpha: float = 1.0
    neg_pos_ratio: float = 3.0
    iou_threshold: float = 0.5
    min_negatives: int = 8


@dataclass(frozen=True)
class TrainConfig:
    """SGD with momentum on Ray Train workers.

    ``batch_size`` is per worker; the global batch is ``batch_size * num_workers`` and
    ``lr`` is the rate for ``lr_batch`` images, scaled linearly to the global batch (the
    paper: 1e-3 at 32). The schedule (warmup, then ``milestones`` or cosine, as fractions
    of all iterations) is the same whatever the number of workers.
    """

    epochs: int = 10
    batch_size: int = 32
    lr: float = 0.05
    lr_batch: int = 32
    schedule: str = "multistep"  # multistep | cosine
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_iters: int = 100
    milestones: tuple[float, ...] = (2 / 3, 5 / 6)  # fractions of the schedule (the paper's 80k/120k)
    gamma: float = 0.1
    grad_clip: float | None = None
    time_limit_s: float | None = None  # stop early (after the running epoch) past this
    seed: int = 0
    num_threads: int | None = None  # torch intra-op threads; None: torch's default
    # NHWC activations: oneDNN's convs run 1.26x (SSD300) to 1.4x (light) faster per CPU
    # training step, measured on 2 cores; on GPU it enables the tensor-core layouts.
    channels_last: bool = True
    run_name: str | None = None  # checkpoints go to {checkpoint_dir}/{run_name}; reuse a name to resume
    checkpoint_dir: str = "runs"
    checkpoint_every: int = 5  # epochs; the last epoch is always saved; validation runs with each
    keep_checkpoints: int = 2  # the latest ones kept on disk
    resume: bool = True  # continue from the latest checkpoint of the same run_name
    # Ray Train: workers, and what each reserves. A fraction of a CPU is allowed: on a
    # small machine the train workers must leave CPUs to the Ray Data workers.
    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    amp: bool = True  # mixed precision on GPU (fp16 + GradScaler); ignored on CPU
    max_failures: int = 2  # worker failures survived by restarting from the latest checkpoint


@dataclass(frozen=True)
class EvalConfig:
    score_threshold: float = 0.01
    nms_threshold: float = 0.45
    top_k: int = 400
    max_detections: int = 200
    batch_size: int = 64
    coco: bool = False  # also COCO AP@[.5:.95] (pycocotools)
    sample_images: int = 16  # validation images drawn with their detections, logged as a grid


@dataclass(frozen=True)
class TrackingConfig:
    """MLflow. ``uri``: a local path (made absolute by the job; it becomes
    ``sqlite:///...``) or a server's URI. ``artifacts``: where a new experiment keeps its
    runs' artifacts (a folder or a bucket URI); by default the ``artifacts`` folder beside
    a SQLite store, and a server's own (which serves them from its bucket: a local folder
    would be the disk of whichever worker logged them)."""

    enabled: bool = True
    uri: str = "mlruns/mlflow.db"
    artifacts: str | None = None
    model_name: str | None = None  # registered model name; the config's name when None
    parent_run_id: str | None = None  # set by a sweep: each trial's run is a child of the sweep's run


@dataclass(frozen=True)
class ExperimentConfig:
    name: str = "shapes-light"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


def to_dict(config: Any) -> dict[str, Any]:
    """A plain, YAML- and pickle-friendly dict (tuples become lists)."""

    def plain(v: Any) -> Any:
        if isinstance(v, (tuple, list)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(config))


def _coerce(value: Any, hint: Any, where: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"config key {where}: expected a list, got {value!r}")
        return tuple(_coerce(v, args[0], where) for v in value)
    # bool is an int subclass: `true` must not pass where a number is expected.
    if hint is float:
        if isinstance(value, str):
            # YAML 1.1 (PyYAML) reads exponents without a dot (`lr: 1e-3`) as strings.
            with contextlib.suppress(ValueError):
                return float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"config key {where}: expected a number, got {value!r}")
        return float(value)
    if hint in (int, str, bool) and (not isinstance(value, hint) or (hint is int and isinstance(value, bool))):
        raise ValueError(f"config key {where}: expected {hint.__name__}, got {value!r}")
    return value


def _build(cls: type, data: Mapping[str, Any] | None, where: str = "") -> Any:
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        prefix = f"{where}." if where else ""
        raise ValueError(f"unknown config key {prefix}{unknown[0]} (known: {', '.join(sorted(names))})")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    return cls(**kwargs)


def from_dict(data: Mapping[str, Any]) -> ExperimentConfig:
    """Rebuild a config from :func:`to_dict`'s output (or a YAML document)."""
    return _build(ExperimentConfig, data)


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``a.b=c`` overrides to a plain config dict; values are parsed as YAML."""
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r} is not of the form a.b=value")
        *parents, leaf = key.strip().split(".")
        node = data
        for p in parents:
            child = node.setdefault(p, {})
            if not isinstance(child, dict):
                raise ValueError(f"override {item!r}: {p} is not a section")
            node[p] = child = dict(child)
            node = child
        node[leaf] = yaml.safe_load(raw)
    return data


def with_absolute_paths(cfg: ExperimentConfig, base: Path) -> ExperimentConfig:
    """Local data paths made absolute against ``base`` (URIs such as s3:// untouched):
    Ray starts workers and jobs in other directories, so paths must not depend on one."""

    def absolute(value: str) -> str:
        return value if "://" in value or Path(value).is_absolute() else str((base / value).resolve())

    data = dataclasses.replace(cfg.data, root=absolute(cfg.data.root), shards=absolute(cfg.data.shards))
    weights = cfg.model.backbone_weights
    model = dataclasses.replace(cfg.model, backbone_weights=absolute(weights) if weights else None)
    train = dataclasses.replace(cfg.train, checkpoint_dir=absolute(cfg.train.checkpoint_dir))
    uri = cfg.tracking.uri
    if "://" not in uri:  # a local SQLite file
        uri = f"sqlite:///{absolute(uri)}"
    artifacts = cfg.tracking.artifacts
    tracking = dataclasses.replace(cfg.tracking, uri=uri, artifacts=absolute(artifacts) if artifacts else None)
    return dataclasses.replace(cfg, model=model, data=data, train=train, tracking=tracking)


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> ExperimentConfig:
    """Defaults, then the YAML file (if any), then the overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no config file at {path}")
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: a config file must be a YAML mapping")
        data = loaded
    try:
        return from_dict(apply_overrides(data, overrides))
    except ValueError as err:
        raise ValueError(f"{path or 'config'}: {err}") from None
