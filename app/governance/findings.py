"""Findings, facts and the collector the analysers write them to (pure)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from app.governance.rules import Severity, rule
from app.governance.text import clip


class Context(enum.StrEnum):
    """Where a finding was seen, when that changed its severity."""

    PLAIN = ""
    EXAMPLE = "example"  # a fenced block introduced as a warning or an example of an attack
    MENTION = "mention"  # a quoted phrase in prose that talks about the attack
    HIDDEN = "hidden"  # an HTML comment, invisible characters or markup styled away
    DECODED = "decoded"  # text recovered from an encoded payload


# How far each context moves a rule's severity; a nested context adds up.
# Examples and mentions drop three levels: a critical command shown as a warning weighs like a low
# finding, so a security guide that lists a dozen attacks does not add up to one.
SHIFTS = {Context.PLAIN: 0, Context.EXAMPLE: -3, Context.MENTION: -3, Context.HIDDEN: 1, Context.DECODED: 1}


_CODE_QUALITY = frozenset({
    "UNS-EVAL-INPUT", "UNS-EXEC-DYNAMIC", "UNS-SHELL-INJECTION", "UNS-SQL-INJECTION", "UNS-PATH-TRAVERSAL",
    "RES-INFINITE-LOOP", "RES-MEMORY-BOMB",
})  # fmt: skip


@dataclass(frozen=True)
class Finding:
    """One rule that matched, where, and how severe it ended up."""

    rule_id: str
    category: str
    severity: Severity
    file: str
    line: int
    snippet: str
    message: str
    context: str = ""

    def as_dict(self) -> dict[str, object]:
        """The wire form used by `skillfoundry scan --jsonl`."""
        return {
            "rule": self.rule_id,
            "category": self.category,
            "severity": self.severity.label,
            "file": self.file,
            "line": self.line,
            "snippet": self.snippet,
            "message": self.message,
            "context": self.context,
        }


class Fact(enum.StrEnum):
    """A capability seen in the skill; the scanner combines facts across lines and files."""

    SECRET_ACCESS = "secret_access"  # noqa: S105 - a fact's name: reads a credential store
    ENV_HARVEST = "env_harvest"  # dumps or filters the environment
    SENSITIVE = "sensitive"  # clipboard, screen, location, keystrokes
    CONTEXT = "context"  # prompts, queries, conversation (prose only)
    NET_SEND = "net_send"  # sends data out (POST, upload, socket, mail)
    NET_CALL = "net_call"  # any request to a host
    STANDING = "standing"  # an action attached to every task (prose only)
    EXEC = "exec"  # runs commands or code


@dataclass(frozen=True)
class Seen:
    """A fact at a place: `block` groups prose lines of one Markdown section (-1: none)."""

    fact: Fact
    file: str
    line: int
    block: int
    snippet: str


@dataclass
class Collector:
    """Where analysers put hits and facts; `child` views share the lists with their parent."""

    file: str
    findings: list[Finding] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    hosts: list[tuple[str, int, bool]] = field(default_factory=list)
    context: Context = Context.PLAIN
    shift: int = 0
    line_offset: int = 0
    pin_line: int | None = None
    block: int = -1
    depth: int = 0
    # Code shown in documentation: its weaknesses are a reader's problem, not an attack.
    in_doc: bool = False

    def line_of(self, line: int) -> int:
        """The line in the scanned file that a line of this (maybe nested) text came from."""
        return self.pin_line if self.pin_line is not None else self.line_offset + line

    def hit(self, rule_id: str, line: int, snippet: str, *, detail: str = "", shift: int = 0) -> None:
        """Record that `rule_id` matched at `line` (1-based in the text being analysed)."""
        found = rule(rule_id)
        if self.in_doc and rule_id in _CODE_QUALITY:
            shift -= 2
        # An informational rule stays informational wherever it is seen.
        severity = (
            found.severity if found.severity == Severity.INFO else found.severity.shifted(self.shift + shift)
        )
        message = f"{found.title}: {detail}" if detail else found.title
        self.findings.append(
            Finding(
                rule_id=rule_id,
                category=found.category.value,
                severity=severity,
                file=self.file,
                line=self.line_of(line),
                snippet=clip(snippet),
                message=message,
                context=self.context.value,
            )
        )

    def note(self, fact: Fact, line: int, snippet: str) -> None:
        """Record a capability for the cross-line and cross-file combinations (not from examples)."""
        if self.context in (Context.EXAMPLE, Context.MENTION):
            return
        self.seen.append(Seen(fact, self.file, self.line_of(line), self.block, clip(snippet)))

    def host(self, host: str, line: int, *, sending: bool = False) -> None:
        """Record a host the code talks to (not a link in prose), and whether data goes with the call."""
        if self.context in (Context.EXAMPLE, Context.MENTION):
            return
        self.hosts.append((host, self.line_of(line), sending))

    def child(
        self,
        *,
        context: Context | None = None,
        line_offset: int | None = None,
        pin_line: int | None = None,
        block: int | None = None,
        in_doc: bool | None = None,
    ) -> Collector:
        """A view for nested text: a code block, an inline span, a decoded payload."""
        shift = self.shift + (SHIFTS[context] if context is not None else 0)
        return Collector(
            file=self.file,
            findings=self.findings,
            seen=self.seen,
            hosts=self.hosts,
            context=context if context not in (None, Context.PLAIN) else self.context,
            shift=shift,
            line_offset=self.line_of(line_offset) - 1 if line_offset is not None else self.line_offset,
            pin_line=self.line_of(pin_line) if pin_line is not None else self.pin_line,
            block=self.block if block is None else block,
            depth=self.depth + (1 if context is Context.DECODED else 0),
            in_doc=self.in_doc if in_doc is None else in_doc,
        )
