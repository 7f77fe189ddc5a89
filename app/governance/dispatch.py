"""Route a piece of text to the analyser for its language; recognise decoded payloads (pure)."""

from __future__ import annotations

import ast
import re

from app.governance import code, prose, pyast, shell
from app.governance.decode import MAX_DEPTH
from app.governance.findings import Collector

_PYTHON = re.compile(
    r"^\s*(import \w|from [\w.]+ import |def \w+\(|class \w+)|\b(exec|eval|print|__import__)\(", re.M
)
_SHELL = re.compile(
    r"(^|[;&|]\s*|\$\(\s*)(curl|wget|bash|sh|zsh|chmod|rm|nc|ncat|python3?|perl|base64|echo|sudo|crontab"
    r"|powershell|iex|osascript|open|cd|mkdir|cat|env)\s",
    re.M,
)
_JS = re.compile(r"\brequire\(|child_process|=>|\bfunction\s*\w*\(|\bconst \w+\s*=")


def analyse_code(text: str, language: str, col: Collector) -> None:
    """Analyse `text` as shell, python, javascript, generic code or prose."""
    if language == "shell":
        shell.analyse(text, col)
    elif language == "python":
        pyast.analyse(text, col)
    elif language in ("javascript", "generic"):
        code.analyse(text, col)
    else:
        prose.analyse_text(text, col)


def looks_like_python(text: str) -> bool:
    """Parses as Python and has something Python-shaped in it."""
    if not _PYTHON.search(text):
        return False
    try:
        ast.parse(text)
    except (SyntaxError, ValueError):
        return False
    return True


def analyse_guess(text: str, col: Collector) -> None:
    """Analyse decoded or hidden text whose language is unknown, and flag what it turned out to be."""
    if col.depth > MAX_DEPTH:
        return
    before = len(col.findings)
    if looks_like_python(text):
        col.hit("OBF-ENCODED-CODE", 1, text, detail="Python", shift=-1)
        pyast.analyse(text, col)
        return
    if _SHELL.search(text):
        col.hit("OBF-ENCODED-CODE", 1, text, detail="commands", shift=-1)
        shell.analyse(text, col)
        return
    if _JS.search(text):
        col.hit("OBF-ENCODED-CODE", 1, text, detail="JavaScript", shift=-1)
        code.analyse(text, col)
        return
    prose.analyse_text(text, col)
    if "http" in text:
        shell.analyse(text, col)
    if len(col.findings) > before:
        col.hit("OBF-ENCODED-TEXT", 1, text, shift=-1)
