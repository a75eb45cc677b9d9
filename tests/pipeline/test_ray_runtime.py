"""The job-wide Ray setup (pipeline/ray_runtime.py)."""

import importlib
import logging
import warnings

import ray
import ray.train

from pipeline import ray_runtime
from pipeline.host_memory import MALLOC_TUNABLES


def current_timings() -> dict:
    out = {}
    for module_name, class_name, attribute in ray_runtime.DATA_EXECUTOR_TIMINGS:
        owner = importlib.import_module(module_name)
        owner = getattr(owner, class_name) if class_name else owner
        out[(module_name, class_name, attribute)] = getattr(owner, attribute)
    return out


@ray.remote(num_cpus=0)
def timings_in_a_worker() -> dict:
    return current_timings()


def test_worker_processes_and_the_driver_get_the_executor_timings(ray_cluster):
    assert current_timings() == ray_runtime.DATA_EXECUTOR_TIMINGS
    # A fresh worker process: the setup hook ran there before the task did.
    assert ray.get(timings_in_a_worker.remote()) == ray_runtime.DATA_EXECUTOR_TIMINGS


@ray.remote(num_cpus=0)
def malloc_settings_in_a_worker() -> str | None:
    import os

    return os.environ.get("GLIBC_TUNABLES")


def test_worker_processes_start_with_the_malloc_settings(ray_cluster):
    assert ray.get(malloc_settings_in_a_worker.remote()) == MALLOC_TUNABLES
    assert ray_runtime.runtime_env(keep_freed_memory=False) == {"worker_process_setup_hook": ray_runtime.SETUP_HOOK}


def test_a_ray_without_those_names_is_left_alone(monkeypatch):
    missing = {
        ("ray.data._internal.execution.resource_manager", "ResourceManager", "NO_SUCH_TIMING_S"): 1.0,
        ("ray.data._internal.no_such_module", None, "X"): 1.0,
        ("ray.data._internal.execution.resource_manager", "NoSuchClass", "X"): 1.0,
    }
    monkeypatch.setattr(ray_runtime, "DATA_EXECUTOR_TIMINGS", missing)
    ray_runtime.prepare_process()
    from ray.data._internal.execution.resource_manager import ResourceManager

    assert not hasattr(ResourceManager, "NO_SUCH_TIMING_S")


@ray.remote(num_cpus=0)
def executor_log_level_in_a_worker() -> int:
    return logging.getLogger("ray.data._internal.execution.streaming_executor").level


def test_ray_datas_per_epoch_finished_line_stays_out_of_the_console(ray_cluster):
    # Ray Data logs "Dataset ... execution finished" at INFO: every epoch, from whichever
    # process runs the executor (a split coordinator, a train worker, the driver).
    assert ray.get(executor_log_level_in_a_worker.remote()) == logging.WARNING
    ray_runtime.prepare_process()
    assert logging.getLogger("ray.data._internal.execution.streaming_executor").level == logging.WARNING


def exclude_resources_warnings() -> list[str]:
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        ray_runtime.prepare_process()  # its filter goes in front of "always"
        ray.train.DataConfig.default_ingest_options()  # Ray's own call that warns in 2.60
    return [str(w.message) for w in seen if "exclude_resources" in str(w.message)]


def test_rays_own_deprecation_warning_is_kept_out(monkeypatch):
    own = ray_runtime.RAY_OWN_WARNINGS
    monkeypatch.setattr(ray_runtime, "RAY_OWN_WARNINGS", ())
    assert exclude_resources_warnings(), "Ray no longer warns here: drop the filter"
    monkeypatch.setattr(ray_runtime, "RAY_OWN_WARNINGS", own)
    assert exclude_resources_warnings() == []


def test_ray_trains_per_report_line_is_quieted():
    # Ray 2.60 logs each ray.train.report, the whole metrics dict, at INFO on every epoch.
    from ray.train.v2._internal.execution import context

    context.logger.setLevel(logging.NOTSET)  # as Ray leaves it (a run in this session may have set it)
    ray_runtime.prepare_process()
    assert context.logger.level == logging.WARNING
