"""A worker's native memory: torch's per-shape kernel cache bounded, free heap given back when over limit.

Measured with one process distilling generated trajectories one event at a time (docs/deployment.md,
"Worker memory"). Python's own allocations stay flat; what grew was native. In bfloat16, torch keeps
a compiled matmul for every input shape it has seen, up to 1,024 (`LRU_CACHE_CAPACITY`, ideep's
cache, apart from oneDNN's own), and a worker sees new shapes all the time (batches of texts of every
length): the live heap grew by about 1.3 MiB a trajectory. With 16 entries it stays flat.

What moves RSS after that is glibc keeping the heap a job freed, for the next job to use again.
Giving it back after every job costs about 5-8% more CPU (the next job faults the pages in again),
so it is given back only when the process is over its replacement limit, before Celery replaces it.
"""

from __future__ import annotations

import ctypes
import logging
import os
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

log = logging.getLogger(__name__)

# Enough for the three weight shapes of a batch (query/key/value/output, up, down) over a few batches;
# a worker's batches rarely repeat a shape beyond that.
KERNEL_CACHE_ENTRIES = 16


def bound_shape_caches() -> None:
    """Keep at most 16 compiled kernels in torch's per-shape cache; call before the model first runs.

    torch reads `LRU_CACHE_CAPACITY` once, on its first matmul in the process. One already set is kept.
    """
    os.environ.setdefault("LRU_CACHE_CAPACITY", str(KERNEL_CACHE_ENTRIES))


def resident_mib() -> float | None:
    """This process's resident set size in MiB (None where /proc cannot tell)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


@lru_cache(maxsize=1)
def _malloc_trim() -> Callable[[int], int] | None:
    # glibc only; elsewhere (musl, macOS) there is nothing to call and nothing is given back.
    try:
        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def release_free_memory() -> bool:
    """Give the heap's free pages back to the OS (glibc `malloc_trim(0)`); whether any were released."""
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False


def release_if_over(limit_mib: int) -> None:
    """Give free heap back when this process's RSS is over `limit_mib` (0: no limit, nothing done)."""
    if limit_mib <= 0:
        return
    before = resident_mib()
    if before is None or before <= limit_mib:
        return
    release_free_memory()
    after = resident_mib() or before
    log.info(
        "worker RSS %.0f MiB over the %d MiB limit; free heap given back: %.0f MiB", before, limit_mib, after
    )
