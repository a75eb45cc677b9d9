"""How a Ray worker's malloc treats the memory a training step frees.

A step allocates and frees the same activation buffers every iteration (the light model
at batch 32: tensors of 1-30 MB each). glibc's defaults hand them back to the kernel as
soon as they are freed: blocks past the mmap threshold are unmapped, the main heap is
trimmed past the trim threshold, and the arena of a thread other than the main one (Ray
Train V2 runs the training loop in a thread) deletes each 64 MB heap as soon as it
empties. The next step faults every page in again, zero-filled by the kernel. Measured on
a 2-core VM, light model, batch 32, the step in a thread: 2,800-5,500 minor page faults
and 8-10 ms of system CPU a step with the defaults, ~25-200 faults and ~1 ms with
:data:`MALLOC_TUNABLES`; two default runs in seventeen took 38,000-62,000 faults a step and
ran about twice as slow. (PyTorch's CPU allocator has no caching of its own to turn on.)

:data:`MALLOC_TUNABLES`, glibc tunables read when a process starts:

- ``arena_max=1``: every thread allocates from the main heap, the only one that keeps
  freed memory under the trim threshold; the thresholds alone do not stop the faults of
  a thread's arena (measured: they left 2,300-3,600 a step, and ``arena_max`` alone
  4,200-5,400).
- ``trim_threshold`` 1 GiB: freed memory at the top of the heap stays mapped for reuse,
  up to that much.
- ``mmap_threshold`` 32 MiB, glibc's largest: blocks below it come from the heap, so they
  are reused rather than mapped afresh every step.

The cost is resident memory: a process keeps freed memory, up to the trim threshold at
the top of its heap, instead of returning it between steps. The settings go to every
worker process of a job (:func:`pipeline.ray_runtime.runtime_env`), not to the train
workers alone: Ray reuses a worker process only for tasks of the same runtime
environment, and the validation tasks a train worker submits inherit its environment, so
train-worker-only variables cost a fresh data worker (~10 s on 2 cores) at every
validation (measured).
``pipeline.ray_runtime.connect(..., keep_freed_memory=False)`` starts a job without them
(with them, the job's ``GLIBC_TUNABLES`` replaces one its workers would inherit).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform

log = logging.getLogger(__name__)

TRIM_THRESHOLD = 1 << 30
MMAP_THRESHOLD = 32 << 20  # glibc refuses more (HEAP_MAX_SIZE / 2 on 64-bit)
MALLOC_TUNABLES = (
    f"glibc.malloc.arena_max=1:glibc.malloc.trim_threshold={TRIM_THRESHOLD}:"
    f"glibc.malloc.mmap_threshold={MMAP_THRESHOLD}"
)

# mallopt's parameter numbers (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8


def malloc_env() -> dict[str, str]:
    """Environment variables that give a process started with them
    :data:`MALLOC_TUNABLES`. Other C libraries ignore the variable."""
    return {"GLIBC_TUNABLES": MALLOC_TUNABLES}


def keep_freed_memory_here() -> bool:
    """Apply the same settings to this running process with ``mallopt``: for training in
    the main thread of a process started without the variable (the benchmarks' plain
    loop; the main thread always allocates from the main heap). Threads already running
    keep their arenas, and a thread started later may share one of those rather than the
    main heap. False where the C library is not glibc (nothing changed)."""
    libc = platform.libc_ver()[0]
    if libc != "glibc":
        log.debug("C library %r is not glibc: malloc keeps its own settings", libc)
        return False
    mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
    settings = ((_M_ARENA_MAX, 1), (_M_TRIM_THRESHOLD, TRIM_THRESHOLD), (_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    return all(mallopt(ctypes.c_int(param), ctypes.c_int(value)) == 1 for param, value in settings)
