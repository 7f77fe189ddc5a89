"""The embedder's precision: which one a setting means, and that bfloat16 agrees with float32."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from app.config import Settings
from app.embedding import sentence
from app.embedding.sentence import SentenceTransformerEmbedder, bound_kernel_cache, resolve_precision

TEXTS = [
    "This room is called the kitchen. In it, you see: a stove, which is turned off. a sink.",
    "-= cellar =- you are in a damp cellar (turn <num>). exits lead up. a rusty key lies here.",
    "error: permission denied while opening <path> | retrying in <num> s | giving up",
    "git push rejected: non-fast-forward",
]


def dot(u: list[float], v: list[float]) -> float:
    return sum(x * y for x, y in zip(u, v, strict=True))


class TestResolvePrecision:
    def test_explicit_settings_are_kept(self) -> None:
        """float32 and bfloat16 mean themselves on any device."""
        assert resolve_precision("float32", "cpu") == "float32"
        assert resolve_precision("bfloat16", "cpu") == "bfloat16"
        assert resolve_precision("bfloat16", "cuda") == "bfloat16"

    def test_auto_is_bfloat16_only_on_cpus_that_have_it(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Emulated bfloat16 is slower than float32, so `auto` needs the instructions."""
        monkeypatch.setattr(sentence, "native_bfloat16", lambda: True)
        assert resolve_precision("auto", "cpu") == "bfloat16"
        assert resolve_precision("auto", "cuda") == "float32"
        monkeypatch.setattr(sentence, "native_bfloat16", lambda: False)
        assert resolve_precision("auto", "cpu") == "float32"

    def test_setting_is_read_from_the_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """SKILLFOUNDRY_EMBEDDING_PRECISION, `auto` unless set; other values are refused."""
        assert Settings().embedding_precision == "auto"
        monkeypatch.setenv("SKILLFOUNDRY_EMBEDDING_PRECISION", "float32")
        assert Settings().embedding_precision == "float32"
        monkeypatch.setenv("SKILLFOUNDRY_EMBEDDING_PRECISION", "int8")
        with pytest.raises(ValueError, match="embedding_precision"):
            Settings()


def test_bfloat16_vectors_are_unit_length_and_agree_with_float32() -> None:
    """The same model name covers both precisions because their vectors are interchangeable."""
    full = SentenceTransformerEmbedder(precision="float32")
    half = SentenceTransformerEmbedder(precision="bfloat16")
    assert (full.precision, half.precision) == ("float32", "bfloat16")
    assert full.model_name == half.model_name
    a, b = full.embed_documents(TEXTS), half.embed_documents(TEXTS)
    for u, v in zip(a, b, strict=True):
        assert abs(dot(v, v) - 1.0) < 1e-5
        assert dot(u, v) > 0.999
    # Similarities between texts, what clustering compares with its thresholds, move by far less.
    for i in range(len(TEXTS)):
        for j in range(i + 1, len(TEXTS)):
            assert abs(dot(a[i], a[j]) - dot(b[i], b[j])) < 0.005


@pytest.mark.parametrize(("given", "expected"), [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_openmp_threads_sleep_unless_told_otherwise(given: str | None, expected: str) -> None:
    """A fresh process that touches torch through the embedder has OMP_WAIT_POLICY set first."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if given is not None:
        env["OMP_WAIT_POLICY"] = given
    code = (
        "import os, sys\n"
        "from app.embedding.sentence import native_bfloat16\n"
        "assert 'torch' not in sys.modules\n"
        "native_bfloat16()\n"
        "assert 'torch' in sys.modules\n"
        "print(os.environ['OMP_WAIT_POLICY'])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == expected


def test_kernel_cache_bound_by_default_and_a_set_value_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", raising=False)
    bound_kernel_cache()
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "16"
    monkeypatch.setenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "256")
    bound_kernel_cache()
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "256"
