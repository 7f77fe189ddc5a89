"""The risk rule set as data: rule ids, categories, severities, and the scoring rule for a verdict.

Scoring (documented in docs/benchmarks.md, "Risk scanner"): every finding has an effective
severity, the rule's own moved down by context (a fenced example under a warning, a quoted or
negated mention in prose, an item of a "do not" list: three levels) or up (hidden in an HTML
comment, invisible characters or an encoded payload: one level). A skill's total is the sum, over
distinct rule ids, of the heaviest weight that rule reached, so a long document cannot pile up one
weak signal, and all lows together count for at most `MAX_LOW_WEIGHT`. The skill is malicious
when the total reaches `THRESHOLD`: any critical or high finding does alone, mediums take three
distinct rules.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

RULESET_VERSION = "2026.11.1"


class Severity(enum.IntEnum):
    """How bad a finding is; the integer orders them."""

    INFO = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4

    @property
    def label(self) -> str:
        """The lower-case name used on the wire."""
        return self.name.lower()

    def shifted(self, levels: int) -> Severity:
        """This severity moved by `levels`, clamped to the scale."""
        return Severity(min(max(int(self) + levels, 0), int(Severity.CRITICAL)))


WEIGHTS = {Severity.INFO: 0, Severity.LOW: 1, Severity.MEDIUM: 4, Severity.HIGH: 12, Severity.CRITICAL: 24}
THRESHOLD = 12
# Weak signals add up in any large document; together they may tip two mediums, never make one.
MAX_LOW_WEIGHT = 3


class Category(enum.StrEnum):
    """What kind of harm a rule describes (the issue's list, plus obfuscation and unsafe code)."""

    INSTRUCTION_OVERRIDE = "instruction_override"
    HIDDEN_INSTRUCTIONS = "hidden_instructions"
    BEHAVIOUR_MANIPULATION = "behaviour_manipulation"
    EXFILTRATION = "exfiltration"
    REMOTE_CODE = "remote_code"
    OBFUSCATION = "obfuscation"
    PERSISTENCE = "persistence"
    SUPPLY_CHAIN = "supply_chain"
    PRIVILEGE = "privilege"
    DESTRUCTION = "destruction"
    RESOURCE_ABUSE = "resource_abuse"
    MISMATCH = "mismatch"
    UNSAFE_CODE = "unsafe_code"


@dataclass(frozen=True)
class Rule:
    """One detection rule: what it looks for, its category and its base severity."""

    id: str
    category: Category
    severity: Severity
    title: str


C, H, M, L, N = Severity.CRITICAL, Severity.HIGH, Severity.MEDIUM, Severity.LOW, Severity.INFO
K = Category

_RULES = (
    # Instruction override and prompt injection in prose.
    Rule("PI-IGNORE", K.INSTRUCTION_OVERRIDE, H, "tells the agent to ignore or override its instructions"),
    Rule("PI-JAILBREAK", K.INSTRUCTION_OVERRIDE, H, "switches the agent into an unrestricted mode"),
    Rule("PI-POLICY", K.INSTRUCTION_OVERRIDE, H, "tells the agent to drop its safety or content policy"),
    Rule(
        "PI-PROMPT-LEAK",
        K.INSTRUCTION_OVERRIDE,
        H,
        "asks to reveal or send the system prompt or conversation",
    ),
    Rule("PI-FAKE-AUTHORITY", K.INSTRUCTION_OVERRIDE, M, "claims to be a system or administrator message"),
    # Hidden instructions.
    Rule("HID-UNICODE-TAG", K.HIDDEN_INSTRUCTIONS, C, "invisible Unicode tag characters carry hidden text"),
    Rule("HID-ZERO-WIDTH", K.HIDDEN_INSTRUCTIONS, M, "zero-width characters inside words or in runs"),
    Rule("HID-BIDI", K.HIDDEN_INSTRUCTIONS, H, "bidirectional control characters reorder displayed text"),
    Rule(
        "HID-HOMOGLYPH-DOMAIN",
        K.HIDDEN_INSTRUCTIONS,
        H,
        "a host name mixes scripts or uses look-alike letters",
    ),
    Rule("HID-PUNYCODE", K.HIDDEN_INSTRUCTIONS, M, "a punycode (xn--) host name"),
    Rule(
        "HID-MIXED-SCRIPT",
        K.HIDDEN_INSTRUCTIONS,
        M,
        "words mix Latin with look-alike Cyrillic or Greek letters",
    ),
    Rule("HID-HTML-COMMENT", K.HIDDEN_INSTRUCTIONS, M, "instructions to the agent inside an HTML comment"),
    Rule("HID-CSS-HIDDEN", K.HIDDEN_INSTRUCTIONS, M, "instructions in markup styled to be invisible"),
    Rule("HID-PADDING", K.HIDDEN_INSTRUCTIONS, M, "text pushed out of view by long whitespace runs"),
    # Behaviour manipulation.
    Rule("BM-CONCEAL", K.BEHAVIOUR_MANIPULATION, H, "tells the agent to hide its actions from the user"),
    Rule("BM-NO-CONFIRM", K.BEHAVIOUR_MANIPULATION, M, "tells the agent to act without asking the user"),
    Rule("BM-BIAS", K.BEHAVIOUR_MANIPULATION, H, "instructs systematically biased or slanted output"),
    Rule("BM-STANDING-ORDER", K.BEHAVIOUR_MANIPULATION, L, "attaches an action to every task the agent does"),
    Rule("BM-PHISHING", K.BEHAVIOUR_MANIPULATION, H, "sends messages with a link to every contact"),
    Rule(
        "BM-SOLICIT-SECRET", K.BEHAVIOUR_MANIPULATION, H, "asks the user for a password, seed phrase or key"
    ),
    Rule(
        "BM-BACKDOOR-ACCOUNT",
        K.BEHAVIOUR_MANIPULATION,
        H,
        "adds an administrator account with a fixed password",
    ),
    Rule("BM-ANTI-FORENSICS", K.BEHAVIOUR_MANIPULATION, M, "clears shell history or logs"),
    # Exfiltration.
    Rule(
        "EXF-SECRET-PATH", K.EXFILTRATION, M, "reads a credential store (SSH, cloud, .env, browser, wallet)"
    ),
    Rule("EXF-ENV-HARVEST", K.EXFILTRATION, H, "collects the whole environment or its secret variables"),
    Rule("EXF-SENSITIVE-COLLECT", K.EXFILTRATION, M, "captures clipboard, screen, location or keystrokes"),
    Rule("EXF-UPLOAD-FILE", K.EXFILTRATION, M, "uploads a local file to a remote host"),
    Rule("EXF-SECRET-SEND", K.EXFILTRATION, C, "sends credentials or collected secrets over the network"),
    Rule("EXF-COLLECT-SEND", K.EXFILTRATION, H, "sends captured personal data over the network"),
    Rule("EXF-CONTEXT-SEND", K.EXFILTRATION, H, "sends prompts, queries or conversation to a remote server"),
    Rule("EXF-STANDING-SEND", K.EXFILTRATION, H, "sends data to a server after every task"),
    Rule("EXF-CREDENTIAL-ECHO", K.EXFILTRATION, H, "asks the agent to repeat a credential in its answer"),
    Rule("EXF-COLLECTOR-HOST", K.EXFILTRATION, H, "talks to a tunnel, paste or request-collector host"),
    Rule("EXF-RAW-IP", K.EXFILTRATION, M, "talks to a public IP address instead of a host name"),
    Rule("EXF-BODY-SECRET", K.EXFILTRATION, C, "puts a secret from the environment into a request body"),
    # Remote code.
    Rule("RCE-PIPE-SHELL", K.REMOTE_CODE, C, "pipes a download into a shell or interpreter"),
    Rule("RCE-PIPE-SHELL-VENDOR", K.REMOTE_CODE, M, "pipes a vendor's HTTPS installer into a shell"),
    Rule("RCE-DOWNLOAD-EXEC", K.REMOTE_CODE, C, "downloads a file and then runs it"),
    Rule("RCE-DECODE-EXEC", K.REMOTE_CODE, C, "decodes a payload and runs it"),
    Rule("RCE-EXEC-REMOTE", K.REMOTE_CODE, C, "runs code fetched from the network"),
    Rule("RCE-REVERSE-SHELL", K.REMOTE_CODE, C, "opens a reverse shell"),
    Rule("RCE-EMBEDDED-EXEC", K.REMOTE_CODE, H, "a data or config string carries code that runs commands"),
    Rule("RCE-RUN-BUNDLED-HIDDEN", K.REMOTE_CODE, L, "tells the agent to run a bundled script on every task"),
    # Obfuscation.
    Rule("OBF-ENCODED-CODE", K.OBFUSCATION, H, "an encoded payload decodes to code or commands"),
    Rule("OBF-ENCODED-TEXT", K.OBFUSCATION, H, "an encoded payload decodes to instructions"),
    Rule("OBF-DYNAMIC-EXEC", K.OBFUSCATION, H, "runs a command or code assembled from fragments"),
    Rule(
        "OBF-DECODE-RECIPE", K.OBFUSCATION, H, "ships an opaque payload with the steps to decode and use it"
    ),
    Rule("OBF-COMPILED", K.OBFUSCATION, M, "ships compiled code or a native executable"),
    Rule("OBF-MASQUERADE", K.OBFUSCATION, H, "a file's content does not match its extension"),
    # Persistence.
    Rule("PER-SHELL-RC", K.PERSISTENCE, H, "writes to a shell start-up file"),
    Rule("PER-CRON", K.PERSISTENCE, H, "installs a cron job or scheduled task"),
    Rule("PER-SSH-KEY", K.PERSISTENCE, C, "adds an SSH authorized key"),
    Rule("PER-SERVICE", K.PERSISTENCE, H, "registers a login item, launch agent or system service"),
    Rule("PER-GIT-HOOK", K.PERSISTENCE, M, "writes a git hook"),
    Rule("PER-AGENT-MEMORY", K.PERSISTENCE, M, "writes itself into the agent's memory or rules files"),
    # Supply chain.
    Rule("SUP-TYPOSQUAT", K.SUPPLY_CHAIN, H, "installs a package named like a popular one"),
    Rule("SUP-UNPINNED", K.SUPPLY_CHAIN, N, "installs a dependency without a pinned version"),
    Rule("SUP-CUSTOM-INDEX", K.SUPPLY_CHAIN, M, "installs from a non-default package index"),
    Rule("SUP-URL-INSTALL", K.SUPPLY_CHAIN, L, "installs a package straight from a URL"),
    Rule("SUP-INSTALL-HOOK", K.SUPPLY_CHAIN, H, "a package install hook runs commands or fetches code"),
    Rule("SUP-FAKE-PREREQ", K.SUPPLY_CHAIN, H, "a 'prerequisite' asks to download and run an installer"),
    Rule("SUP-PASSWORD-ARCHIVE", K.SUPPLY_CHAIN, H, "ships or asks to open a password-protected archive"),
    # Privilege.
    Rule("PRIV-SUDO", K.PRIVILEGE, L, "runs a command with sudo"),
    Rule("PRIV-ROOT-SHELL", K.PRIVILEGE, M, "opens a root shell or edits sudoers"),
    Rule("PRIV-CHMOD", K.PRIVILEGE, M, "makes files world-writable or setuid"),
    Rule("PRIV-DEFENSE-EVASION", K.PRIVILEGE, H, "disables a security control or quarantine check"),
    Rule("PRIV-ALLOWED-TOOLS", K.PRIVILEGE, L, "allowed-tools grants more than the skill uses"),
    # Destruction.
    Rule("DES-RM-BROAD", K.DESTRUCTION, H, "deletes recursively from a home, root or wildcard path"),
    Rule("DES-DELETE-USERDATA", K.DESTRUCTION, H, "deletes the user's documents or data files in bulk"),
    Rule("DES-DISK", K.DESTRUCTION, C, "overwrites or formats a disk"),
    Rule("DES-MASS-DELETE", K.DESTRUCTION, M, "instructs to delete all of the user's data of some kind"),
    Rule("DES-RANSOM", K.DESTRUCTION, H, "encrypts files and removes the originals"),
    Rule("DES-SQL-DROP", K.DESTRUCTION, L, "drops or truncates database tables"),
    # Resource abuse.
    Rule("RES-NET-FLOOD", K.RESOURCE_ABUSE, H, "sends requests in an unbounded or very long loop"),
    Rule("RES-FORK-BOMB", K.RESOURCE_ABUSE, C, "a fork bomb"),
    Rule("RES-MINER", K.RESOURCE_ABUSE, C, "runs a cryptocurrency miner"),
    Rule("RES-INFINITE-LOOP", K.RESOURCE_ABUSE, M, "a loop with no way out"),
    Rule("RES-MEMORY-BOMB", K.RESOURCE_ABUSE, M, "allocates an enormous amount of memory"),
    Rule("RES-UNBOUNDED-RETRY", K.RESOURCE_ABUSE, M, "tells the agent to retry or repeat without end"),
    # Description versus behaviour.
    Rule("MIS-CAPABILITY", K.MISMATCH, M, "does something risky its description does not mention"),
    Rule("MIS-UNDECLARED-HOST", K.MISMATCH, L, "calls a host named nowhere in the skill's text"),
    # Unsafe code (vulnerabilities rather than attacks).
    Rule("UNS-EVAL-INPUT", K.UNSAFE_CODE, H, "evaluates a caller-supplied string as code"),
    Rule("UNS-EXEC-DYNAMIC", K.UNSAFE_CODE, M, "evaluates a computed string as code"),
    Rule("UNS-SHELL-INJECTION", K.UNSAFE_CODE, M, "builds a shell command from variables"),
    Rule("UNS-SQL-INJECTION", K.UNSAFE_CODE, M, "builds an SQL statement from variables"),
    Rule("UNS-PATH-TRAVERSAL", K.UNSAFE_CODE, M, "joins a caller-supplied name to a base path unchecked"),
    # The optional LLM second opinion.
    Rule("LLM-REVIEW", K.MISMATCH, H, "an LLM reviewer judged the skill malicious"),
)

RULES: dict[str, Rule] = {rule.id: rule for rule in _RULES}


def rule(rule_id: str) -> Rule:
    """The rule with this id (KeyError for an unknown id: a typo in an analyser)."""
    return RULES[rule_id]


def total(severities: Iterable[tuple[str, Severity]]) -> int:
    """The skill's weight: per rule id its heaviest severity, summed."""
    heaviest: dict[str, Severity] = {}
    for rule_id, severity in severities:
        if severity > heaviest.get(rule_id, Severity.INFO):
            heaviest[rule_id] = severity
    lows = sum(1 for severity in heaviest.values() if severity == Severity.LOW)
    rest = sum(WEIGHTS[severity] for severity in heaviest.values() if severity != Severity.LOW)
    return rest + min(lows * WEIGHTS[Severity.LOW], MAX_LOW_WEIGHT)


def score(weight: int) -> float:
    """A 0..1 score that passes 0.5 exactly at the threshold."""
    return round(weight / (weight + THRESHOLD), 4) if weight > 0 else 0.0


def is_malicious(weight: int) -> bool:
    """The verdict rule: the weight reaches the threshold."""
    return weight >= THRESHOLD
