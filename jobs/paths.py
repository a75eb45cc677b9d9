"""Paths and URIs as every job takes them from the command line.

Ray runs workers and job drivers in other directories, so a local path given relative to
where the command ran is made absolute here, before it travels; URIs (``s3://``,
``models:/``, ``runs:/``) pass as they are.
"""

from __future__ import annotations

from pathlib import Path

MLFLOW_URI_PREFIXES = ("models:/", "runs:/")


def default_tracking_uri(given: str | None) -> str:
    """``given`` (``--tracking-uri`` or MLFLOW_TRACKING_URI), else the SQLite store the
    training job writes by default, ``./mlruns/mlflow.db``. A local path is a SQLite file,
    as in the config's ``tracking.uri``: ``MLFLOW_TRACKING_URI=runs/x.db`` means the same
    store to ``jobs.train`` and to every other job (MLflow itself would take it for a
    file-store folder and find nothing there)."""
    given = given or "mlruns/mlflow.db"
    return given if "://" in given else f"sqlite:///{Path(given).resolve()}"


def is_mlflow_uri(source: str) -> bool:
    return source.startswith(MLFLOW_URI_PREFIXES)


def absolute(source: str | None) -> str | None:
    """A local path made absolute; a URI, an MLflow model URI or None as it is."""
    if source is None or "://" in source or is_mlflow_uri(source):
        return source
    return str(Path(source).resolve())
