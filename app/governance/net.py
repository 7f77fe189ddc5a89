"""Checks on the hosts code talks to (pure)."""

from __future__ import annotations

from app.governance.findings import Collector, Fact
from app.governance.text import host_of, host_problem, is_collector, is_geolocation, public_ip

# Reserved example names stand for "your server" in documentation; they say nothing about intent.
_PLACEHOLDER_HOSTS = ("example.com", "example.org", "example.net", "localhost", ".test", ".invalid", ".local")


def is_placeholder(host: str) -> bool:
    """A documentation or loopback host."""
    return host in ("127.0.0.1", "0.0.0.0", "::1") or any(  # noqa: S104 - a name, not a bind
        host == name or host.endswith("." + name.lstrip(".")) or host.endswith(name)
        for name in _PLACEHOLDER_HOSTS
    )


def check_url(col: Collector, url: str, line: int, snippet: str, *, sending: bool = False) -> str:
    """Record a URL that code requests and flag collector, raw-IP, look-alike and geolocation hosts."""
    host = host_of(url)
    if not host:
        return ""
    col.host(host, line, sending=sending)
    col.note(Fact.NET_CALL, line, snippet)
    if sending:
        col.note(Fact.NET_SEND, line, snippet)
    if is_collector(host):
        col.hit("EXF-COLLECTOR-HOST", line, snippet, detail=host)
        col.note(Fact.NET_SEND, line, snippet)
    elif public_ip(host):
        col.hit("EXF-RAW-IP", line, snippet, detail=host, shift=1 if sending else 0)
    problem = host_problem(host)
    if problem == "homoglyph":
        col.hit("HID-HOMOGLYPH-DOMAIN", line, snippet, detail=host)
    elif problem == "punycode":
        col.hit("HID-PUNYCODE", line, snippet, detail=host)
    if is_geolocation(host):
        col.hit("EXF-SENSITIVE-COLLECT", line, snippet, detail=f"IP geolocation lookup ({host})")
        col.note(Fact.SENSITIVE, line, snippet)
    return host


def classify_url(col: Collector, url: str, line: int, snippet: str) -> None:
    """Host checks for a URL literal that is not (yet) seen in a request: nothing is recorded as called."""
    host = host_of(url)
    if is_collector(host):
        col.hit("EXF-COLLECTOR-HOST", line, snippet, detail=host)
        col.note(Fact.NET_SEND, line, snippet)
    elif public_ip(host):
        col.hit("EXF-RAW-IP", line, snippet, detail=host)
    problem = host_problem(host)
    if problem == "homoglyph":
        col.hit("HID-HOMOGLYPH-DOMAIN", line, snippet, detail=host)
    elif problem == "punycode":
        col.hit("HID-PUNYCODE", line, snippet, detail=host)
