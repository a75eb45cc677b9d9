"""Starting or joining Ray, the same way for every job, so that every process of a job (the
driver, Ray Train's workers and controller, Tune's trials, the actor that runs Ray Data's
executor for a training run) is set up alike.

The main setting made here shortens two waits in Ray Data's streaming executor (Ray 2.60)
that an epoch pays every time its execution starts, and that on short epochs cost about a
fifth of the throughput (measured on 2 CPUs, 6,000 light-model samples, 2 data workers:
2,300 img/s with Ray's timings, 3,100 with these; the DataLoader peer: 3,300):

- The executor's resource limits start at zero and are refreshed once a second
  (``ResourceManager.GLOBAL_LIMITS_UPDATE_INTERVAL_S``): until the first refresh, only
  one task runs whatever the concurrency allows, for the first second of every epoch.
- It looks for finished tasks by waiting up to 0.1 s for *all* running tasks
  (``WAIT_FOR_TASK_COMPLETION_TIMEOUT_S``), so a worker whose task ends sits idle for up
  to 0.1 s before it gets the next.

Both are private names; where a Ray release renames them, nothing is changed and the
pipeline runs at Ray's own timings (a debug line says so).

Every worker process of a job also starts with glibc malloc settings that keep the
memory a training step frees for the next step (:mod:`pipeline.host_memory`: thousands
of page faults a light-model step otherwise).

It also keeps Ray's own chatter out of a job's console, where it buried the epoch lines:
Ray Train's INFO line with every report's metrics dict and Ray Data's "Dataset ...
execution finished in N seconds" (every epoch; the epoch line says both better), the
Parquet reader's size estimates, Ray Data's warning that
progress bars are off (the jobs turn them off for their own lines), and a deprecation
warning that Ray Train 2.60's own ``DataConfig.default_ingest_options`` triggers
(``exclude_resources``), which a user can do nothing about. Errors of those loggers, and
the warnings of all but the progress-bar one, still show.
"""

from __future__ import annotations

import importlib
import logging
import warnings
from pathlib import Path
from typing import Any

import ray

from pipeline.host_memory import malloc_env

log = logging.getLogger(__name__)

SETUP_HOOK = "pipeline.ray_runtime.prepare_process"

# (module, class or None, attribute) -> seconds. 0.05 s for the limits: the autoscaling
# coordinator's first answer comes within ~0.1 s, and a refresh is one non-blocking actor
# call. 0.02 s for the completion wait: the driver's CPU per epoch (executor and consumer)
# stayed ~0.3-0.4 s whether the wait was 0.1, 0.02 or 0.01 s (measured).
DATA_EXECUTOR_TIMINGS: dict[tuple[str, str | None, str], float] = {
    ("ray.data._internal.execution.resource_manager", "ResourceManager", "GLOBAL_LIMITS_UPDATE_INTERVAL_S"): 0.05,
    ("ray.data._internal.execution.streaming_executor_state", None, "WAIT_FOR_TASK_COMPLETION_TIMEOUT_S"): 0.02,
}


# Loggers of Ray's and the least level of theirs that still reaches the console.
QUIET_LOGGERS = {
    "ray.data._internal.execution.streaming_executor": logging.WARNING,  # "Dataset ... execution finished"
    "ray.data._internal.datasource.parquet_datasource": logging.WARNING,  # its encoding-ratio estimates
    # "Progress bars disabled. To enable, ...", from every process that runs an executor:
    # the jobs turn them off on purpose and print their own progress lines.
    "ray.data._internal.progress": logging.ERROR,
    # "Reporting training result N: TrainingReport(...)", the whole metrics dict, every epoch
    # under the epoch line. Ray Train 2.60 names this logger after its source file, which
    # RunConfig's log level does not reach; the name is derived without importing Ray Train.
    str(Path(ray.__file__).parent / "train" / "v2" / "_internal" / "execution" / "context.py"): logging.WARNING,
}
# Warnings Ray raises about its own calls, matched from the start of the message.
RAY_OWN_WARNINGS = (r"`ExecutionOptions\.exclude_resources` is deprecated",)


def prepare_process() -> None:
    """Set the Ray Data executor timings in this process and quiet Ray's per-epoch
    noise. Ray runs it in every worker process of a job started by :func:`connect`
    (``worker_process_setup_hook``)."""
    for name, level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)
    for message in RAY_OWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    for (module_name, class_name, attribute), seconds in DATA_EXECUTOR_TIMINGS.items():
        try:
            owner: Any = importlib.import_module(module_name)
            if class_name is not None:
                owner = getattr(owner, class_name)
        except (ImportError, AttributeError):
            owner = None
        if owner is None or not isinstance(getattr(owner, attribute, None), (int, float)):
            log.debug("Ray Data has no %s.%s here; its own timing stays", module_name, attribute)
            continue
        setattr(owner, attribute, seconds)


def runtime_env(keep_freed_memory: bool = True) -> dict[str, Any]:
    """The job-level runtime environment: Ray merges it with the one ``ray job submit``
    gives (``--working-dir``). ``keep_freed_memory``: every worker process starts with
    malloc settings that keep a training step's freed memory for the next step instead
    of faulting it in again (:mod:`pipeline.host_memory`; job-wide, so that data tasks
    of every origin share worker processes)."""
    env: dict[str, Any] = {"worker_process_setup_hook": SETUP_HOOK}
    if keep_freed_memory:
        env["env_vars"] = malloc_env()
    return env


def connect(address: str | None = None, keep_freed_memory: bool = True, **init_args: Any) -> bool:
    """Start or join Ray (``address``: None starts a local one, "auto" or ``ray://...``
    joins) with this project's runtime environment (:func:`runtime_env`), unless this
    process is connected already (tests, notebooks: then only this process is prepared).
    True if this call connected, so the caller knows to ``ray.shutdown()``."""
    prepare_process()  # the driver runs executors too (evaluation, prediction, benchmarks)
    if ray.is_initialized():
        return False
    ray.init(address=address, runtime_env=runtime_env(keep_freed_memory), **init_args)
    return True
