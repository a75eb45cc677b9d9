"""Training checkpoints: everything needed to continue a run where it stopped.

A checkpoint is a directory (so Ray Train can wrap it with ``Checkpoint.from_directory``)
holding ``state.pt`` (model, optimizer, scheduler and AMP scaler state dicts: tensors and plain
containers only, read back with ``weights_only=True``) and ``meta.json`` (epoch, config,
class names, MLflow run id, metrics). It is written under a temporary name and renamed into place, so
a crash never leaves a half-written checkpoint that looks complete.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pyarrow.fs as pafs
import torch

from ssd_core.data.shards import resolve

STATE, META = "state.pt", "meta.json"


def save_checkpoint(
    folder: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    epoch: int,
    config: dict[str, Any],
    run_id: str | None = None,
    metrics: dict[str, float | str] | None = None,
    class_names: tuple[str, ...] = (),
    scaler: torch.amp.GradScaler | None = None,
) -> Path:
    """Write the checkpoint of the end of ``epoch`` to ``folder/epoch-{epoch:04d}``."""
    target = Path(folder) / f"epoch-{epoch:04d}"
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    state = {
        "model": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
    }
    if scaler is not None and scaler.is_enabled():
        state["scaler"] = scaler.state_dict()
    torch.save(state, partial / STATE)
    meta = {
        "epoch": epoch, "config": config, "mlflow_run_id": run_id, "metrics": metrics or {},
        "class_names": list(class_names),
    }  # fmt: skip
    (partial / META).write_text(json.dumps(meta, indent=2))
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return target


def complete_checkpoints(folder: str | Path) -> list[Path]:
    """The complete checkpoints under ``folder``, oldest epoch first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = sorted(p for p in folder.glob("epoch-*") if p.is_dir() and not p.name.endswith(".partial"))
    return [p for p in found if (p / STATE).is_file() and (p / META).is_file()]


def latest_checkpoint(folder: str | Path) -> Path | None:
    """The complete checkpoint of the highest epoch under ``folder``, or None."""
    done = complete_checkpoints(folder)
    return done[-1] if done else None


def prune_checkpoints(folder: str | Path, keep: int) -> None:
    """Delete all but the ``keep`` latest complete checkpoints."""
    done = complete_checkpoints(folder)
    for old in done[: max(len(done) - keep, 0)]:
        shutil.rmtree(old, ignore_errors=True)


def read_meta(path: str | Path) -> dict[str, Any]:
    """A checkpoint's ``meta.json``: epoch, config, class names, MLflow run id, metrics."""
    return json.loads((Path(path) / META).read_text())


def load_checkpoint(
    path: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    scaler: torch.amp.GradScaler | None = None,
) -> dict[str, Any]:
    """Restore the states in place and return the checkpoint's ``meta.json``."""
    path = Path(path)
    state = torch.load(path / STATE, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and "scaler" in state:
        scaler.load_state_dict(state["scaler"])
    return read_meta(path)


@contextlib.contextmanager
def local_folder(fs: pafs.FileSystem, root: str) -> Iterator[Path]:
    """The folder ``root`` of ``fs`` on this machine: where it is on a local filesystem;
    from a bucket, downloaded to a temporary folder of the same name (``epoch-N``, which
    a resume line shows) that lasts as long as the ``with`` block."""
    if isinstance(fs, pafs.LocalFileSystem):
        yield Path(root)
        return
    root = root.rstrip("/")
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / PurePosixPath(root).name
        local.mkdir()  # copy_files writes into a folder that exists
        pafs.copy_files(root, str(local), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
        yield local


@contextlib.contextmanager
def fetched_checkpoint(source: str | Path) -> Iterator[Path | None]:
    """The checkpoint at ``source`` as a local folder (:func:`local_folder`), or None when
    ``source`` holds none (no ``meta.json``: a saved model, an MLflow URI). ``source``: a
    local path, or a checkpoint in a bucket (``s3://BUCKET/runs/<run>/epoch-0120``, any
    URI pyarrow reads), where a cluster's runs keep theirs."""
    try:
        fs, root = resolve(source)
    except ValueError:  # a scheme pyarrow has no filesystem for (pyarrow.ArrowInvalid): not a checkpoint
        yield None
        return
    root = root.rstrip("/")
    if fs.get_file_info(f"{root}/{META}").type != pafs.FileType.File:
        yield None
        return
    with local_folder(fs, root) as folder:
        yield folder
