"""The embedder port and its sentence-transformers implementation."""

from app.embedding.port import Embedder
from app.embedding.sentence import SentenceTransformerEmbedder, get_embedder

__all__ = ["Embedder", "SentenceTransformerEmbedder", "get_embedder"]
