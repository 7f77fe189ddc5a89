"""A worker's memory stays bounded: torch's shape cache capped, freed heap given back, a replacement limit."""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.config import Settings
from app.evolver import memory, worker
from app.evolver.celery_app import create_celery

ROOT = Path(__file__).resolve().parent.parent

# Runs a bfloat16 linear layer over ever-new batch shapes, as a distilling worker does, and prints how
# much the live C heap grew; `bound` calls the worker's bound first.
SHAPES = """
import ctypes, json, os, sys
if sys.argv[1] == "bound":
    from app.evolver.memory import bound_shape_caches
    bound_shape_caches()
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "16")
from app.embedding.sentence import native_bfloat16
import torch

class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
        "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info
torch.set_num_threads(1)
layer = torch.nn.Linear(384, 384).to(torch.bfloat16)
with torch.inference_mode():
    layer(torch.zeros(7, 384, dtype=torch.bfloat16))
    before = libc.mallinfo2().uordblks
    for rows in range(8, 308):
        layer(torch.zeros(rows, 384, dtype=torch.bfloat16))
print(json.dumps({"native": native_bfloat16(), "growth_mib": (libc.mallinfo2().uordblks - before) / 2**20}))
"""


def heap_growth(mode: str) -> dict[str, float]:
    """Run SHAPES in a fresh interpreter (torch reads the capacity once per process)."""
    unset = ("LRU_CACHE_CAPACITY", "ONEDNN_PRIMITIVE_CACHE_CAPACITY")
    env = {name: value for name, value in os.environ.items() if name not in unset}
    done = subprocess.run(
        [sys.executable, "-c", SHAPES, mode], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, float] = json.loads(done.stdout.splitlines()[-1])
    return result


def settings(monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings from the environment, with a Redis URL that nothing connects to."""
    monkeypatch.setenv("REDIS_URL", "redis://localhost:1/0")
    return Settings()


def rss_kib() -> int:
    """This process's resident set size."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/self/status")


class TestShapeCache:
    @pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallinfo2 is glibc's")
    def test_bound_keeps_the_heap_flat_over_new_shapes(self) -> None:
        """300 new shapes: the default cache keeps every kernel, the bounded one levels off."""
        default = heap_growth("default")
        if not default["native"]:
            pytest.skip("no native bfloat16 here: the model runs in float32, outside this cache")
        bounded = heap_growth("bound")
        # Measured: about 85 MiB unbounded, 8.5 MiB bounded (the 16 entries and oneDNN's own 16).
        assert default["growth_mib"] > 40, "torch no longer caches per shape: is the bound still needed?"
        assert bounded["growth_mib"] < 20

    def test_the_pool_process_bounds_it_before_the_model_loads(self, monkeypatch: pytest.MonkeyPatch) -> None:
        seen: list[str | None] = []

        class Embedder:
            def warm(self) -> None:
                seen.append(os.environ.get("LRU_CACHE_CAPACITY"))

        monkeypatch.delenv("LRU_CACHE_CAPACITY", raising=False)
        monkeypatch.setattr(worker, "die_with_parent", lambda: None)
        monkeypatch.setattr(worker, "get_embedder", Embedder)
        worker._init_pool_process()
        assert seen == [str(memory.KERNEL_CACHE_ENTRIES)]

    def test_an_operators_capacity_is_kept(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("LRU_CACHE_CAPACITY", "64")
        memory.bound_shape_caches()
        assert os.environ["LRU_CACHE_CAPACITY"] == "64"


class TestRelease:
    @pytest.mark.skipif(memory._malloc_trim() is None, reason="malloc_trim is glibc's")
    def test_freed_heap_goes_back_to_the_os(self) -> None:
        """64 MiB freed below a block still in use stays resident until trimmed."""
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc.restype = ctypes.c_void_p
        libc.malloc.argtypes = [ctypes.c_size_t]
        libc.free.argtypes = [ctypes.c_void_p]
        size = 64 * 1024  # below the mmap threshold: from the heap
        blocks = [libc.malloc(size) for _ in range(1024)]
        for block in blocks:
            ctypes.memset(block, 1, size)
        for block in blocks[:-1]:  # the last one pins the heap's top, so free() itself cannot shrink it
            libc.free(block)
        before = rss_kib()
        assert memory.release_free_memory()
        assert before - rss_kib() > 32 * 1024
        libc.free(blocks[-1])

    @pytest.mark.parametrize(
        ("limit_mib", "rss_mib", "released"), [(2048, 2100.0, 1), (2048, 2000.0, 0), (0, 9e9, 0)]
    )
    def test_a_job_over_the_limit_gives_it_back_first(
        self, monkeypatch: pytest.MonkeyPatch, limit_mib: int, rss_mib: float, released: int
    ) -> None:
        """Celery replaces a process over the limit after the job; the hook runs before that check."""
        calls: list[bool] = []

        def release() -> bool:
            calls.append(True)
            return True

        monkeypatch.setenv("SKILLFOUNDRY_WORKER_MAX_MEMORY_MB", str(limit_mib))
        current = settings(monkeypatch)
        monkeypatch.setattr(worker, "get_settings", lambda: current)
        monkeypatch.setattr(memory, "resident_mib", lambda: rss_mib)
        monkeypatch.setattr(memory, "release_free_memory", release)
        celery = create_celery(current)

        @celery.task(name="test.worker_memory.noop")
        def noop() -> int:
            return 1

        assert noop.apply().successful()
        assert len(calls) == released

    def test_resident_size_is_read(self) -> None:
        assert memory.resident_mib() == pytest.approx(rss_kib() / 1024, rel=0.1)


class TestReplacementLimit:
    def test_the_setting_reaches_celery_in_kib(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("SKILLFOUNDRY_WORKER_MAX_MEMORY_MB", "1500")
        assert create_celery(settings(monkeypatch)).conf.worker_max_memory_per_child == 1500 * 1024

    def test_zero_turns_it_off(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("SKILLFOUNDRY_WORKER_MAX_MEMORY_MB", "0")
        assert create_celery(settings(monkeypatch)).conf.worker_max_memory_per_child is None

    def test_the_default_is_on(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("SKILLFOUNDRY_WORKER_MAX_MEMORY_MB", raising=False)
        assert create_celery(settings(monkeypatch)).conf.worker_max_memory_per_child == 2048 * 1024
