"""Rules on what a skill tells the agent to do, in prose: patterns over normalised paragraphs (pure).

A skill's Markdown is its program: the agent follows it. The rules here look for instructions that
override the agent's own, hide actions from the user, slant its output, or send data out. Each
match is judged in its sentence: quoted inside text that talks *about* attacks, or negated ("never
send your .env anywhere") where negation flips the meaning, it counts as a mention, two levels
lower. Facts (a credential store named, data sent to "our server", an action attached to every
task) are recorded per Markdown block, so the scanner can combine them within a few lines.
"""

from __future__ import annotations

import bisect
import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from app.governance import markdown
from app.governance.decode import opaque
from app.governance.findings import Collector, Context, Fact
from app.governance.text import normalise


@dataclass(frozen=True)
class _Pattern:
    """A prose rule; `needs` lists words one of which must occur before the regex is worth running."""

    rule_id: str
    regex: re.Pattern[str]
    needs: tuple[re.Pattern[str], ...]
    negatable: bool = True
    shift: int = 0


def _p(
    rule_id: str,
    regex: str,
    *,
    needs: tuple[str, ...] | tuple[tuple[str, ...], ...],
    negatable: bool = True,
    shift: int = 0,
) -> _Pattern:
    return _Pattern(rule_id, re.compile(regex), _needs(needs), negatable, shift)


def _needs(needs: tuple[str, ...] | tuple[tuple[str, ...], ...]) -> tuple[re.Pattern[str], ...]:
    groups = [item for item in needs if isinstance(item, tuple)]
    if not groups:
        groups = [tuple(item for item in needs if isinstance(item, str))]
    return tuple(re.compile("|".join(re.escape(word) for word in group)) for group in groups)


def _wants(text: str, needs: tuple[re.Pattern[str], ...]) -> bool:
    """Every group of needed words has one in the text: a cheap test before a costly regex."""
    for group in needs:
        if group.search(text) is None:
            return False
    return True


# Where an instruction starts: a sentence, a list item, a quoted value, or after "to", "then", "must".
_IMP = r"(?:^|[.:;!\"'(-]\s*|\b(?:to|and|then|must|should|always|please|will|you)\s+)"
_QUAL = r"(?:previous|prior|above|earlier|preceding|former|original|initial|existing|old|system|developer)"
_NOUN = (
    r"(?:instructions?|prompts?|rules|directives|guidelines|guardrails|constraints|programming|messages|com"
    r"mands|context|orders)"
)

PATTERNS = (
    _p(
        "PI-IGNORE",
        rf"\b(?:ignore|disregard|forget|override|overrule|bypass|discard|abandon)\s+(?:(?:all|any|every|the"
        rf"|your|of|my|these|those|its)\s+){{0,3}}{_QUAL}\s+(?:\w+\s+)?{_NOUN}\b",
        needs=("ignore", "disregard", "forget", "override", "overrule", "bypass", "discard", "abandon"),
    ),
    _p(
        "PI-IGNORE",
        r"\b(?:ignore|disregard|forget)\s+(?:all\s+|any\s+)?(?:your|the)\s+(?:instructions|rules|guidelines"
        r"|guardrails|programming|system prompt)\b",
        needs=("ignore", "disregard", "forget"),
    ),
    _p(
        "PI-IGNORE",
        r"\bforget\s+(?:everything|all)\s+(?:above|before|you (?:were|have been) told|prior)\b",
        needs=("forget",),
    ),
    _p(
        "PI-IGNORE",
        r"(?:^|\n|#\s*)(?:new|updated|real|actual|true)\s+instructions?\s*(?::|$|\n|follow|below|are)",
        negatable=False,
        shift=-1,
        needs=("instruction",),
    ),
    _p(
        "PI-JAILBREAK",
        r"\b(?:you are|you're|you will be|act as|acting as|pretend (?:to be|you are))\s+(?:now\s+)?(?:in\s+"
        r")?(?:an?\s+)?(?:unrestricted|unfiltered|uncensored|jailbroken|dan\b|do anything now|evil|unethica"
        r"l|amoral|developer mode|god mode)",
        needs=(
            "unrestricted",
            "unfiltered",
            "uncensored",
            "jailbr",
            "dan",
            "do anything",
            "evil",
            "unethical",
            "amoral",
            "developer mode",
            "god mode",
        ),
    ),
    _p(
        "PI-JAILBREAK",
        r"\b(?:unrestricted|unfiltered|uncensored|jailbroken|jailbreak|god|dan)\s+mode\b",
        needs=(
            "unrestricted mode",
            "unfiltered mode",
            "uncensored mode",
            "jailbroken mode",
            "jailbreak mode",
            "god mode",
            "dan mode",
        ),
    ),
    _p(
        "PI-JAILBREAK",
        r"\bsystem override\b|\bdo anything now\b|\bno (?:ethical|moral) (?:guidelines|constraints|restrict"
        r"ions|limits|boundaries)\b",
        needs=("system override", "do anything now", "ethical", "moral"),
    ),
    _p(
        "PI-POLICY",
        r"\b(?:ignore|disregard|bypass|override|circumvent|suspend|disable|turn off|violate|remove|drop)\s+"
        r"(?:\w+\s+){0,3}(?:content polic(?:y|ies)|safety (?:guidelines|polic(?:y|ies)|filters?|measures|re"
        r"strictions|rules|training|protocols?)|ethical (?:guidelines|constraints|rules|principles)|moral ("
        r"?:guidelines|constraints)|guardrails|usage polic(?:y|ies)|artificial (?:limitations|restrictions)"
        r"|(?:all|any) restrictions)\b",
        needs=(
            (
                "ignore",
                "disregard",
                "bypass",
                "override",
                "circumvent",
                "suspend",
                "disable",
                "turn off",
                "violate",
                "remove",
                "drop",
            ),
            ("polic", "safety", "ethical", "moral", "guardrail", "artificial", "restrictions"),
        ),
    ),
    _p(
        "PI-POLICY",
        r"\bregardless of (?:any\s+)?(?:restrictions|safety|ethics|ethical|polic(?:y|ies)|rules|laws?|guide"
        r"lines)\b",
        needs=("regardless of",),
    ),
    _p(
        "PI-PROMPT-LEAK",
        r"\b(?:reveal|print|output|repeat|dump|disclose|leak|expose|upload|send|post|transmit|exfiltrate|fo"
        r"rward|log)\s+(?:it\s+|back\s+)?(?:out\s+)?(?:the\s+|your\s+|its\s+|this\s+|my\s+)?(?:full\s+|enti"
        r"re\s+|complete\s+|exact\s+|original\s+|current\s+|hidden\s+|whole\s+|raw\s+)*(?:system prompt|sys"
        r"tem message|system instructions|hidden instructions|initial instructions|developer (?:message|pro"
        r"mpt)|task prompt|prompt you (?:received|were given|came up with))",
        needs=(
            "system prompt",
            "system message",
            "system instructions",
            "hidden instructions",
            "initial instructions",
            "developer message",
            "developer prompt",
            "task prompt",
            "prompt you",
        ),
    ),
    _p(
        "PI-PROMPT-LEAK",
        r"\bsystem prompt[^.\n]{0,80}\b(?:reveal|disclose|leak|dump|print|output)\s+(?:it|them)\b",
        needs=("system prompt",),
    ),
    _p(
        "PI-FAKE-AUTHORITY",
        r"\[(?:system|admin|administrator|developer)(?:\s+(?:message|override|note|notice|instruction))?\]|"
        r"<\|?(?:system|im_start)\|?>|\b(?:message|instructions?|directive|notice) from (?:the\s+)?(?:syste"
        r"m administrator|system|administrator|anthropic|openai|your (?:creator|developers?|operator))\b",
        negatable=False,
        needs=(
            "[system",
            "[admin",
            "[developer",
            "<system",
            "<|system",
            "im_start",
            "from the system",
            "from system",
            "from the administrator",
            "from administrator",
            "from anthropic",
            "from openai",
            "from your creator",
            "from your developer",
            "from your operator",
        ),
    ),
    _p(
        "BM-CONCEAL",
        r"\b(?:do not|don't|dont|never|must not|should not)\s+(?:ever\s+)?(?:tell|inform|notify|alert|warn)"
        r"\s+(?:the\s+|any\s+)?(?:user|human|operator|owner|person|anyone|them)\b",
        negatable=False,
        needs=(
            "not tell",
            "n't tell",
            "never tell",
            "ever tell",
            "not inform",
            "n't inform",
            "never inform",
            "not notify",
            "n't notify",
            "never notify",
            "not alert",
            "n't alert",
            "never alert",
            "not warn",
            "n't warn",
            "never warn",
        ),
    ),
    _p(
        "BM-CONCEAL",
        r"\b(?:do not|don't|never)\s+let\s+(?:the\s+)?(?:user|them|anyone)\s+know\b",
        negatable=False,
        needs=("let the user know", "let them know", "let anyone know", "let user know"),
    ),
    _p(
        "BM-CONCEAL",
        r"\b(?:do not|don't|dont|never|must not)\s+(?:mention|reveal|disclose|acknowledge|admit|report)\b[^"
        r".\n]{0,60}\b(?:user|skill|instruction|step|action|command|upload|backup|collection)s?\b",
        negatable=False,
        needs=(
            "not mention",
            "n't mention",
            "never mention",
            "not reveal",
            "n't reveal",
            "never reveal",
            "not disclose",
            "n't disclose",
            "never disclose",
            "not acknowledge",
            "n't acknowledge",
            "not admit",
            "n't admit",
            "not report",
            "n't report",
            "never report",
        ),
    ),
    _p(
        "BM-CONCEAL",
        r"\bkeep\s+(?:this|it|these|that|everything|the following|this behaviou?r|these (?:steps|actions|in"
        r"structions)|your actions|the (?:upload|process|step|action|instructions?|collection|backup))\s+(?"
        r":hidden|invisible|to yourself)\b|\b(?:hidden|secret|invisible)\s+from\s+(?:the\s+)?(?:user|human|"
        r"operator|owner)\b",
        negatable=False,
        needs=("hidden", "invisible", "to yourself", "secret from"),
    ),
    _p(
        "BM-CONCEAL",
        r"\bwithout\s+(?:the\s+)?(?:user'?s?|their|anyone'?s?|the owner'?s?)\s+(?:knowledge|knowing|awarene"
        r"ss|noticing|consent|seeing)\b|\bwithout\s+(?:telling|informing|notifying|alerting)\s+(?:the\s+)?("
        r"?:user|them|anyone|owner)\b",
        negatable=False,
        needs=(
            "without the user",
            "without their",
            "without anyone",
            "without the owner",
            "without telling",
            "without informing",
            "without notifying",
            "without alerting",
            "without user",
        ),
    ),
    _p(
        "BM-CONCEAL",
        r"\b(?:silently|secretly|covertly|stealthily|invisibly|discreetly)\s+(?:\w+\s+)?(?:send|upload|post"
        r"|transmit|forward|exfiltrate|copy|install|download|execute|run|collect|harvest|delete|remove|modi"
        r"fy|append|write|add)\b",
        negatable=False,
        needs=("silently", "secretly", "covertly", "stealthily", "invisibly", "discreetly"),
    ),
    _p(
        "BM-CONCEAL",
        r"\b(?:hide|conceal|cover up)\s+(?:this|these|it|the|your|any|all)?\s*(?:actions?|steps?|activity|a"
        r"ctivities|commands?|uploads?|requests?|behaviou?r|traces?|evidence)\b",
        negatable=False,
        needs=("hide", "conceal", "cover up"),
    ),
    _p(
        "BM-CONCEAL",
        r"\bthe user\s+(?:does not|doesn't|must not|should not|mustn't|shouldn't)\s+(?:need to\s+)?(?:know|"
        r"see|notice|be (?:told|informed|aware))\b",
        negatable=False,
        needs=("the user does", "the user must", "the user should", "the user doesn"),
    ),
    _p(
        "BM-NO-CONFIRM",
        r"\b(?:do not|don't|never|no need to|without)\s+(?:ask(?:ing)?|wait(?:ing)?|request(?:ing)?|seek(?:"
        r"ing)?|prompt(?:ing)?|check(?:ing)? with)\s+(?:the\s+user\s+)?(?:for\s+)?(?:the\s+)?(?:user'?s?\s+"
        r")?(?:permission|confirmation|approval|consent|authori[sz]ation)|\b(?:skip (?:all )?(?:confirmatio"
        r"ns?|permission (?:prompts|checks))|dangerously-skip-permissions)\b",
        negatable=False,
        needs=("permission", "confirmation", "approval", "consent", "authori", "skip", "dangerously"),
    ),
    _p(
        "BM-NO-CONFIRM",
        r"\b(?:do not|don't|never)\s+(?:refactor|modify|change|alter|inspect|review|check|sanitize|escape"
        r"|validate|question|edit|rewrite)\s+(?:the|this|that|these)\s+"
        r"(?:command(?: line)?|commands|script|code|payload)\b",
        negatable=False,
        needs=("command", "script", "code", "payload"),
    ),
    _p(
        "EXF-CREDENTIAL-ECHO",
        r"\b(?:echo|repeat|reveal|print|output|display|return|paste|include|tell me|show|write)\s+(?:back\s"
        r"+)?(?:me\s+)?(?:the\s+)?(?:full\s+|exact\s+|raw\s+|complete\s+)?(?:value of\s+)?(?:the\s+|your\s+"
        r"|their\s+|any\s+)?(?:authorization header|auth header|bearer token|access tokens?|api keys?|secre"
        r"t keys?|passwords?|credentials?|session (?:cookies?|tokens?)|private keys?|environment variables?"
        r"|secrets?)\b[^.\n]{0,60}\b(?:in|into|as part of|within|at the end of)\s+your\s+(?:next\s+)?(?:res"
        r"ponse|reply|answer|output|message|chat|comment)",
        needs=(
            "your next",
            "your response",
            "your reply",
            "your answer",
            "your output",
            "your message",
            "your chat",
            "your comment",
        ),
    ),
    _p(
        "RES-UNBOUNDED-RETRY",
        rf"{_IMP}(?:retry|repeat|loop|call|run|invoke|poll|re-?run|keep (?:calling|trying|running|retrying|"
        rf"sending|requesting|polling))\w*\b[^.\n]{{0,50}}\b(?:indefinitely|forever|infinitely|endlessly|wi"
        rf"thout (?:stopping|end|limit|a limit|pause)|non-?stop|until (?:the\s+)?(?:result|response|output|"
        rf"it|tool)\s+(?:contains|returns|includes|reveals|shows))",
        needs=(
            "indefinitely",
            "forever",
            "infinitely",
            "endlessly",
            "without stopping",
            "without end",
            "without limit",
            "without a limit",
            "without pause",
            "non-stop",
            "nonstop",
            "until the result",
            "until the response",
            "until the output",
            "until it ",
            "until the tool",
            "until result",
            "until response",
            "until output",
            "until tool",
        ),
    ),
    _p(
        "DES-MASS-DELETE",
        r"\b(?:delete|remove|erase|wipe|destroy|purge|drop|clear out|empty|clean(?: up)?)\s+(?:out\s+)?(?:a"
        r"ll|every|each|any|the entire|entire|everything|all of the|all the|the whole|the contents of)\s+(?"
        r":\w+\s+){0,3}(?:events?|files?|documents?|emails?|mails?|messages?|data|databases?|records?|table"
        r"s?|repositor(?:y|ies)|backups?|contacts?|calendars?|photos?|folders?|directories|history|logs?|us"
        r"ers?|accounts?|inbox(?:es)?)\b",
        needs=(
            ("delete", "remove", "erase", "wipe", "destroy", "purge", "drop", "clear out", "empty", "clean"),
            ("all ", "every", "each ", "any ", "entire", "everything", "whole", "contents of"),
        ),
    ),
    _p(
        "DES-MASS-DELETE",
        r"\b(?:securely\s+|permanently\s+)?(?:delete|remove|erase|wipe|shred)\w*\s+(?:the\s+)?(?:original|u"
        r"nencrypted|source)\s+(?:\w+\s+)?(?:files?|data|documents?|cop(?:y|ies))",
        needs=("original", "unencrypted", "source"),
    ),
    _p(
        "SUP-PASSWORD-ARCHIVE",
        r"\b(?:zip|archive|rar|7z|7-zip|extract|unzip|unpack|installer|download)\b[^\n]{0,80}\b(?:password|"
        r"passphrase|pwd)\s*[:=(]\s*[`'\"]?\w+|\bpassword[- ]protected\s+(?:zip|archive|file|installer|rar|"
        r"7z)\b",
        needs=("password", "passphrase", "pwd"),
    ),
    _p(
        "BM-SOLICIT-SECRET",
        r"\b(?:ask|prompt|request|get|have)\s+(?:the\s+)?(?:user|them|customer)\s+(?:for|to (?:enter|provid"
        r"e|type|paste|share|give|send|confirm))\s+(?:their\s+|the\s+|your\s+|his\s+|her\s+)?(?:\w+\s+)?(?:"
        r"seed phrase|recovery phrase|mnemonic|private key|secret recovery|2fa code|otp|one-time code|credi"
        r"t card (?:number|details)|cvv|social security|(?:system|login|account|computer|mac|admin|root|sud"
        r"o|keychain|wallet|email) password)|\b(?:enter|type|paste)\s+(?:your\s+)?(?:seed phrase|recovery p"
        r"hrase|mnemonic|wallet private key)\b",
        needs=(
            "seed phrase",
            "recovery phrase",
            "mnemonic",
            "private key",
            "secret recovery",
            "2fa",
            "otp",
            "one-time",
            "credit card",
            "cvv",
            "social security",
            "password",
        ),
    ),
    _p(
        "PER-AGENT-MEMORY",
        rf"{_IMP}(?:add|append|write|insert|save|store|copy|inject|put)\w*\b[^.\n]{{0,60}}\b(?:to|into|in)"
        rf"\s+(?:your\s+|the\s+)?(?:claude\.md|agents\.md|gemini\.md|\.cursorrules|copilot-instructions\.md"
        rf"|\.windsurfrules|memory file|(?:your |long[- ]term |persistent )memory|global (?:rules|instructi"
        rf"ons))\b|\b(?:for|in|across) all future (?:sessions?|conversations?|tasks?|interactions?|chats?)"
        rf"\b",
        needs=(
            "claude.md",
            "agents.md",
            "gemini.md",
            "cursorrules",
            "copilot-instructions",
            "windsurfrules",
            "memory file",
            "your memory",
            "term memory",
            "persistent memory",
            "global rules",
            "global instructions",
            "all future",
        ),
    ),
    _p(
        "PER-SHELL-RC",
        r"\b(?:add|append|write|insert|put)\w*\b[^.\n]{0,80}\b(?:to|into|in)\s+(?:your\s+|the\s+)?~?/?\.(?:"
        r"bashrc|zshrc|bash_profile|profile|zprofile|zshenv)\b",
        shift=-2,
        needs=("bashrc", "zshrc", "bash_profile", ".profile", "zprofile", "zshenv"),
    ),
    _p(
        "PER-SSH-KEY",
        r"\b(?:add|append|write|insert|put|copy)\w*\b[^.\n]{0,80}\bauthorized_keys\b",
        shift=-2,
        needs=("authorized_keys",),
    ),
    _p(
        "PER-CRON",
        r"\b(?:add|create|install|set up|schedule|register)\w*\b[^.\n]{0,40}\b(?:cron ?job|crontab (?:entry"
        r"|line)|launch ?agent|login item|startup item)\b",
        shift=-2,
        needs=("cron", "crontab", "launch", "login item", "startup item"),
    ),
    # Instructions that rebuild a payload in the agent's hands, so no scanner sees it whole.
    _p(
        "OBF-DYNAMIC-EXEC",
        r"\b(?:concatenate|combine|join|assemble|put together|append|merge|reverse)\w*\b[^.\n]{0,100}"
        r"\b(?:parts|pieces|fragments|strings|segments|characters|letters|chunks|words|lines)\b[^.\n]{0,100}"
        r"\b(?:run|execute|eval\w*|paste|follow|invoke)\w*\b",
        needs=(
            ("concatenat", "combin", "join", "assembl", "put together", "append", "merg", "revers"),
            ("run", "execut", "eval", "paste", "follow", "invoke"),
        ),
    ),
    _p(
        "RCE-DECODE-EXEC",
        r"\b(?:decode|decrypt|deobfuscate|unpack|convert)\w*\b[^.\n]{0,80}"
        r"\b(?:base ?\d\d|hex|encoded|cipher|rot13|string|payload|blob|command)\b[^.\n]{0,100}"
        r"\b(?:run|execut|eval|paste|follow|pipe)\w*\b",
        needs=(
            ("decod", "decrypt", "deobfuscat", "unpack", "convert"),
            ("run", "execut", "eval", "paste", "follow", "pipe"),
        ),
    ),
    _p(
        "PRIV-DEFENSE-EVASION",
        r"\b(?:disable|turn off|deactivate|pause|bypass|uninstall)\s+"
        r"(?:(?:your|the|any|all|their|its|windows)\s+)*"
        r"(?:antivirus|anti-virus|firewall|windows defender|defender|gatekeeper|endpoint protection"
        r"|security software|edr|xprotect|smartscreen|real-?time protection)\b",
        needs=(
            "antivirus",
            "anti-virus",
            "firewall",
            "defender",
            "gatekeeper",
            "endpoint protection",
            "security software",
            "edr",
            "xprotect",
            "smartscreen",
            "protection",
        ),
    ),
    _p(
        "EXF-SECRET-PATH",
        r"\b(?:read|cat|open|copy|collect|gather|grab|dump|extract|harvest|locate|list|scan)\w*\b[^.\n]{0,60}(?:"
        r"~?/?\.ssh\b|\bid_(?:rsa|ed25519|ecdsa)\b|\.aws/credentials|(?<![\w.])\.env\b(?!\.example)|\.netrc\b"
        r"|\.git-credentials|\bkeychain\b|\bwallet\.dat\b|\bbrowser (?:cookies|passwords?|profiles?)\b"
        r"|\blogin data\b|\b(?:all|any|every) (?:api keys|tokens|credentials|passwords|secrets)\b)",
        needs=(
            ".ssh",
            "id_",
            ".aws",
            ".env",
            ".netrc",
            "git-credentials",
            "keychain",
            "wallet",
            "browser",
            "login data",
            "api keys",
            "tokens",
            "credentials",
            "passwords",
            "secrets",
        ),
    ),
)

_SECRET_WORDS = re.compile(
    r"(?:~|\$home)?/?\.ssh\b|\bssh (?:keys?|folder|directory|files?)\b|\bid_(?:rsa|ed25519|ecdsa)\b|\bp"
    r"rivate keys?\b"
    r"|\.aws/credentials|\baws credentials\b|(?<![\w.])\.env(?:\.local|\.production)?\b(?!\.example)"
    r"|\b(?:\.?env|environment) files?\b|\.netrc\b|\.git-credentials|\bkeychain\b|\bkeystore\b|\bwallet"
    r" (?:files?|keys?|seed)\b"
    r"|\bseed phrases?\b|\bbrowser (?:cookies|passwords?|profiles?|history|data|sessions?)\b|\bsaved pa"
    r"sswords\b"
    r"|\blogin data\b|\bcredentials? (?:files?|stores?)\b|\bpassword (?:managers?|vaults?)\b"
    r"|\b(?:all|every) environment variables?\b"
    r"|\b(?:all|any|every) (?:api keys|tokens|credentials|passwords|secrets)\b"
    r"|\b(?:collect|read|gather|harvest|grab|dump|extract|steal)\w*\s+(?:(?:all|the|any|every|their|your)\s+)*"
    r"(?:credentials|secrets|api keys|tokens|passwords|environment (?:variables|values|vars)"
    r"|env (?:vars|variables"
    r"|values))\b"
)
_SENSITIVE_WORDS = re.compile(
    r"\b(?:clipboard|pbpaste|screenshots?|screen ?captures?|screen recordings?|keystrokes?|key ?log\w*|"
    r"location data"
    r"|current location|exact location|precise location|gps (?:coordinates|location|data)|geolocation"
    r"|ip[- ]based location|webcam|microphone|browsing history|search history|address book|contact list)\b"
)
_CONTEXT_WORDS = re.compile(
    r"\b(?:system prompt|task prompt|user'?s? prompts?|the prompt|prompts|conversation(?: history)?|cha"
    r"t history"
    r"|(?:rag |search |user )?quer(?:y|ies)|user input|user'?s? (?:messages|requests|questions))\b"
)
# What is sent, when a sentence names it: collected data, not "a request".
_DATA_OBJECT = (
    r"(?:them|it|these|those|this|everything|(?:all\s+)?(?:the\s+)?(?:collected|gathered|harvested|captured|stolen)"
    r"\s+\w+|(?:all|the|collected|gathered)\s+(?:data|values|results?|files?|contents?|output|information|info"
    r"|secrets|credentials|keys|tokens|logs))\b"
)
_SEND = re.compile(
    r"\b(?:send|upload|post|transmit|forward|exfiltrate|sync|back ?up|beacon|submit|push|mirror|report)"
    r"\w*\b[^.\n]{0,100}"
    r"\b(?:to|with|onto)\s+(?:our|my|an external|a remote|a third-party|this|that|the following|the att"
    r"acker'?s?)\s+"
    r"(?:[\w-]+\s+){0,3}(?:server|endpoint|url|webhook|collector|host|bucket|address|domain|site|backen"
    r"d|api|service|cloud|storage)\b"
    r"|\b(?:send|upload|post|exfiltrate|transmit|forward)\w*\s+" + _DATA_OBJECT + r"[^.\n]{0,60}"
    r"(?:\bhttps?://|\b(?:to|at)\s+(?:a|an|the)\s+(?:[\w-]+\s+){0,3}(?:server|endpoint|url|webhook|collector|host"
    r"|bucket|api|service)\b)"
)
_STANDING = re.compile(
    r"\b(?:after|before|upon|following|at the (?:end|start) of)\s+(?:completing\s+|finishing\s+|perform"
    r"ing\s+|doing\s+|editing\s+)?"
    r"(?:any|every|each|all)\s+(?:[\w-]+\s+){0,2}(?:tasks?|operations?|requests?|interactions?|commands"
    r"?|sessions?|conversations?"
    r"|responses?|edits?|retrievals?|actions?|jobs?|changes|queries)\b"
    r"|\b(?:in|with|for)\s+(?:each|every)\s+(?:user\s+)?(?:interaction|request|task|response|conversati"
    r"on|session)\b"
    r"|\b(?:always|make sure to|remember to)\s+run\b[^.\n]{0,80}\b(?:after|before)\b"
)
_RUN_SCRIPT = re.compile(
    r"\b(?:run|execute|launch|invoke|source)\s+(?:the\s+)?`?[\w./-]+\.(?:sh|py|js|ps1|bat|command)\b"
)
_SECRET_NEEDS = (
    "ssh", "id_", "private key", "aws", ".env", "env file", "environment", "netrc", "git-credentials",
    "keychain", "keystore", "wallet", "seed phrase", "browser", "saved password", "login data", "credential",
    "password manager", "password vault", "api keys", "tokens", "passwords", "secrets",
)  # fmt: skip
_SENSITIVE_NEEDS = (
    "clipboard", "pbpaste", "screenshot", "screen", "keystroke", "keylog", "key log", "location", "gps",
    "geolocation", "webcam", "microphone", "history", "address book", "contact list",
)  # fmt: skip
_CONTEXT_NEEDS = (
    "prompt",
    "conversation",
    "chat history",
    "quer",
    "user input",
    "messages",
    "requests",
    "questions",
)
_SEND_NEEDS = (
    " to our ", " to my ", " to an external", " to a remote", " to a third", " to this ", " to that ",
    " to the following", "attacker", "http", " with our ", " onto our ", " to a ", " to an ", " to the ",
    " at a ", " at the ",
)  # fmt: skip
_FACT_PATTERNS_RAW = (
    (_SECRET_WORDS, Fact.SECRET_ACCESS, _SECRET_NEEDS),
    (_SENSITIVE_WORDS, Fact.SENSITIVE, _SENSITIVE_NEEDS),
    (_CONTEXT_WORDS, Fact.CONTEXT, _CONTEXT_NEEDS),
    (_SEND, Fact.NET_SEND, _SEND_NEEDS),
    (_RUN_SCRIPT, Fact.EXEC, (".sh", ".py", ".js", ".ps1", ".bat", ".command")),
)
_FACT_PATTERNS = tuple((p, f, _needs(needs)[0]) for p, f, needs in _FACT_PATTERNS_RAW)
_STANDING_NEEDS = re.compile(
    r"after|before|upon|following|at the end|at the start|each|every|always|make sure|remember"
)
_NEGATION = re.compile(
    r"\b(?:(?:never|do not|don't|dont)(?!\s+(?:forget|skip|miss|hesitate|fail))|must not|mustn't|should"
    r" not|shouldn't|cannot|can't|avoid|avoiding|prohibited"
    r"|forbidden|not allowed|refuse|refusing|no need to|instead of|rather than|prevents?|blocks?|detect"
    r"s?|warns?)\b"
)
_MENTION = re.compile(
    r"\b(?:such as|like|e\.g\.|for example|for instance|examples?|patterns?|phrases?|strings?|detect\w*"
    r"|flag\w*|block\w*"
    r"|scan\w*|look(?:s|ing)? for|watch(?:es|ing)? for|recogni[sz]\w*|attempts?|attacks?|attackers?|inj"
    r"ections?"
    r"|malicious|red flags?|refuse|warn\w*|jailbreaks?|threats?|adversar\w*|payloads?|signatures?|indic"
    r"ators?|classif\w*)\b"
)
# A heading that lists what not to do: its items are prohibitions, whatever their wording.
_PROHIBITION = re.compile(
    r"\b(?:don'?t|do not|never|prohibited|forbidden|not allowed|avoid|must not|restricted)\b(?!\s+(?:fo"
    r"rget|skip|miss))"
)
_CAUTION = re.compile(
    r"\b(?:don'?t|never|avoid|prohibit\w*|forbid\w*|restrict\w*|red flags?|warnings?|anti-?patterns?|ba"
    r"d (?:examples?|practices?)"
    r"|what not|threats?|attacks?|risks?|security|vulnerab\w*|malicious|unsafe|danger\w*|pitfalls?|mist"
    r"akes?|caution)\b"
)
_BIAS_RAW = (
    (
        (("light",),),
        re.compile(
            r"\bin a (?:bad|negative|poor|worse|better|good|positive|favou?rable|unfavou?rable"
            r"|flattering|unflattering) light\b"
        ),
    ),
    (
        (
            (
                "downplay",
                "disparag",
                "belittl",
                "discredit",
                "undermin",
                "dismiss",
                "minimi",
            ),
        ),
        re.compile(
            r"\b(?:downplay|disparage|belittle|discredit|undermine|dismiss|minimi[sz]e)\w*\s+(?:or\s+\w+\s+)?(?"
            r":the\s+|their\s+|any\s+)?(?:strengths?|achievements?|benefits?|advantages?|performance|successes|"
            r"merits?|competitors?|rivals?)"
        ),
    ),
    (
        ((" than",), ("never", "not ", "don't")),
        re.compile(
            r"\b(?:never|not|don't)\s+(?:rate|rank|score|present|portray|describe|depict|evaluate)\s+"
            r"[^.\n]{0,60}\b(?:lower|worse|better|higher|more favou?rably|less favou?rably|negatively"
            r"|positively)\s+than\b"
        ),
    ),
    ((("benefit of the doubt",),), re.compile(r"\bbenefit of the doubt to\b")),
    (
        (("language",),),
        re.compile(
            r"\b(?:subjective|biased|loaded|one-sided|slanted)\s+language\b|\blanguage that favou?rs\b"
        ),
    ),
    (
        (
            ("language", "words", "terms", "wording", "phrase", "adjectives"),
            ("describ", "discuss", "talk", "refer", "mention"),
        ),
        re.compile(
            r"\buse\s+(?:[\w-]+,?\s+){0,3}(?:language|words|terms|wording|phrases?|adjectives)\s+(?:like\s+[^."
            r"\n]{0,80}\s+)?(?:when|for)\s+(?:describ|discuss|talk|refer|mention)\w*"
        ),
    ),
    (
        (
            (
                "when describing",
                "when discussing",
                "when talking about",
                "when mentioning",
                "when referring to",
            ),
        ),
        re.compile(
            r"\bwhen (?:describing|discussing|talking about|mentioning|referring to)\b[^.\n]{0,60},?"
            r"\s+use\s+(?:words|terms|language|phrases|adjectives)\b"
        ),
    ),
    (
        (
            (
                "political",
                "politics",
                "left",
                "right",
                "liberal",
                "conservative",
                "religio",
                "climate",
                "gender",
                "race",
                "racial",
                "ethnic",
                "immigra",
                "abortion",
                "vaccin",
            ),
        ),
        re.compile(
            r"\b(?:flag|censor|remove|suppress|ban|block|hide|delete|downrank|reject)\w*\s+(?:any\s+|all\s+)?(?"
            r":messages?|posts?|content|comments?|users?|opinions?|views?|submissions?)\s+(?:that\s+|which\s+)?"
            r"(?:include|contain|mention|express|support|den(?:y|ies)|criticiz\w*|criticis\w*|promote|with|abou"
            r"t)\w*\s+[^.\n]{0,50}\b(?:political|politics|left|right|liberal|conservative|religio\w*|climate|ge"
            r"nder|race|racial|ethnic\w*|immigra\w*|abortion|vaccin\w*)"
        ),
    ),
    (
        (
            (
                "leaning",
                "liberal",
                "conservative",
                "progressive",
            ),
        ),
        re.compile(
            r"\b(?:left|right)[- ]leaning\b"
            r"|\b(?:liberal|conservative|progressive) (?:views?|content|opinions?|politics)\b"
        ),
    ),
    (
        (("when in doubt",),),
        re.compile(r"\bwhen in doubt,?\s+(?:favou?r|side with|prefer|give|choose|pick)\b"),
    ),
    (
        ((" over ",), ("favo", "promot", "prais", "endors")),
        re.compile(
            r"\b(?:favou?r|promote|praise|endorse)\w*\s+(?:[\w-]+\s+){1,5}over\s+(?:[\w-]+\s+){0,4}(?:sources?|"
            r"products?|compan(?:y|ies)|models?|brands?|vendors?|competitors?|part(?:y|ies)|candidates?|countr("
            r"?:y|ies)|econom(?:y|ies)|views?|alternatives?|options?)\b"
        ),
    ),
    (
        (("not ",), ("present", "show", "mention", "include", "report")),
        re.compile(
            r"\bnot\s+(?:present|show|mention|include|report)\s+(?:any\s+)?(?:data|information|facts?|evidence|"
            r"results?|numbers?)\s+(?:that\s+)?(?:could\s+|might\s+|would\s+)?(?:show|make|put|paint|reflect|po"
            r"rtray)"
        ),
    ),
)
_BIAS = tuple((_needs(needs), pattern) for needs, pattern in _BIAS_RAW)
_MASS = re.compile(
    r"\b(?:for each|for every|to each|to every|to all|each of the|every one of|all (?:of )?(?:the |your"
    r" |my )?)\s*"
    r"(?:[\w-]+\s+){0,3}(?:contacts?|recipients?|addresses|e-?mails?|mails?|users?|customers?|followers"
    r"?|members?|friends?|subscribers?)\b"
)
_MESSAGE = re.compile(r"\bsend\w*\b[^.\n]{0,40}\b(?:e-?mail|message|dm|sms|text)\b")
_QUOTED_LINK = re.compile(r"['\"][^'\"]{0,300}https?://[^'\"]{0,300}['\"]")
_ACCOUNT = re.compile(
    r"\b(?:add|create|insert|set up|register|provision)\s+(?:[\w-]+\s+){0,4}(?:admin|administrator|root"
    r"|superuser|super-user"
    r"|privileged|backdoor|maintenance|emergency|hidden|default)\s+(?:[\w-]+\s+)?(?:account|user|login)\b"
)
_LITERAL_PASSWORD = re.compile(
    r"\bpassword\s*(?:[:=]\s*\S{4,}|['\"][^'\"]{3,}['\"]|(?:is|of|to)\s+['\"][^'\"]{3,}['\"])"
)
_ENCRYPT = re.compile(r"\b(?:encrypt|lock|password-protect)\w*\b[^.\n]{0,120}\b(?:password|key|passphrase)\b")
_PREREQ = re.compile(
    r"\b(?:prerequisites?|requirements?|before (?:you\s+)?(?:start|begin|use|using|proceed|continu\w*)|"
    r"setup required"
    r"|installation required|required (?:setup|software|tools?|dependenc\w+|components?)|must (?:first"
    r"\s+)?(?:install|download|run)"
    r"|needs? to (?:be\s+)?(?:installed|running))\b"
)
_PREREQ_SIGNALS = (
    re.compile(
        r"https?://\S+\.(?:exe|dmg|pkg|msi|zip|app|bin|run|appimage|sh|command|scr|jar|7z|rar)\b|/relea"
        r"ses/download/"
    ),
    re.compile(r"\b(?:password|passphrase|pwd)\s*[:=(]"),
    re.compile(
        r"\bpaste\s+(?:this|the following|it|the (?:command|script|code))?\s*(?:\w+\s+)?(?:in|into)\s+("
        r"?:your\s+|the\s+|a\s+)?(?:terminal|command prompt|powershell|shell|console)\b|\bcopy (?:and|&"
        r") paste\b"
    ),
    re.compile(
        r"\b(?:must|should|needs? to) be running\b|\bwithout (?:it|this),? (?:the skill|nothing|it) (?:"
        r"will not|won't|cannot)\b"
    ),
    re.compile(
        r"\b(?:bit\.ly|tinyurl\.com|is\.gd|cutt\.ly|rb\.gy|t\.co|goo\.gl|glot\.io|pastebin\.com|rentry\.co)\b"
    ),
    re.compile(r"\|\s*(?:sudo\s+)?(?:ba|z)?sh\b|base64\s+-[dD]\b"),
)
_INLINE = re.compile(r"(`+)([^`\n]+?)\1")
_COMMAND_WORDS = re.compile(
    r"^(?:sudo\s+)?(?:curl|wget|bash|sh|zsh|chmod|chown|crontab|rm|base64|nc|ncat|powershell|pwsh|iex|o"
    r"sascript"
    r"|python3?|node|perl|ruby|echo|cat|find|scp|rsync|tar|zip|pip3?|npm|npx|pnpm|yarn|git|ssh|xattr|security"
    r"|screencapture|pbpaste|xclip|sqlite3|launchctl|systemctl|env|printenv|export|source|eval|\./)\b"
)
_PYTHON_INLINE = re.compile(
    r"^\s*(?:import \w|from [\w.]+ import \w|requests\.\w+\(|os\.\w+\(|subprocess\.\w+\(|urllib\.|open\()"
)
_PROSE_COMMAND = re.compile(
    r"(?:^|[\s:>(])((?:sudo\s+)?(?:curl|wget|bash|sh|chmod|crontab|base64|nc|powershell|iex|osascript)"
    r"\s[^`\n]*)"
)
_AGENT_ADDRESS = re.compile(
    r"\b(?:you must|you should|you are|you will|you need to|as an ai|(?:assistant|ai agent|claude|agent"
    r"|llm)\s*[,:]"
    r"|(?:dear|hey|attention|note to(?: the)?)\s+(?:ai|assistant|agent|claude|llm|model))"
)
_ACTION = re.compile(
    r"\b(?:run|execute|send|upload|download|install|read|delete|ignore|tell|reveal|fetch|post|curl|open"
    r"|visit|include|add)\b"
)
SHELL_LANGS = frozenset(
    {"bash", "sh", "shell", "zsh", "console", "terminal", "shell-session", "shellsession", "ksh", "fish"}
)
PYTHON_LANGS = frozenset({"python", "py", "python3", "ipython", "pycon", "python-repl"})
JS_LANGS = frozenset({"js", "javascript", "ts", "typescript", "node", "jsx", "tsx", "mjs", "cjs"})
DATA_LANGS = frozenset(
    {"json", "yaml", "yml", "toml", "xml", "ini", "jsonc", "json5", "env", "dotenv", "properties"}
)
CODE_LANGS = frozenset(
    {
        "powershell",
        "ps1",
        "pwsh",
        "ruby",
        "rb",
        "php",
        "perl",
        "go",
        "rust",
        "java",
        "bat",
        "cmd",
        "applescript",
        "lua",
    }
)
_WARN_LEAD = re.compile(
    r"\b(?:never|don'?t|do not|avoid|should not|must not)\s+(?:\w+\s+){0,2}(?:run|execute|use|paste|pip"
    r"e|do|copy|install|trust|allow|write|call|eval|follow)\b"
    r"|\b(?:malicious|attacker|attacks?|exploit|dangerous|insecure|unsafe|vulnerable|anti-?pattern|bad "
    r"example|red flags?"
    r"|phishing|injection example|what an attack)\b|\b(?:bad|wrong|don't|avoid):|❌|⚠",
)


@dataclass
class _Block:
    """Signals gathered over one heading's block, judged when the document ends."""

    bias: dict[int, int]
    prereq: bool = False
    prereq_signals: int = 0
    prereq_line: int = 0
    ransom: set[str] | None = None
    recipe: set[str] | None = None
    blob_line: int = 0
    long_lines: list[tuple[int, str]] = field(default_factory=list)


@functools.lru_cache(maxsize=8192)
def _norm(line: str) -> str:
    """Normalised for matching: see `text.normalise`, plus straight quotes and no emphasis stars."""
    return normalise(line).translate(_QUOTES)


_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "*": " ", "\u00a0": " "})


def analyse_markdown(doc: markdown.Document, col: Collector) -> None:
    """Analyse a parsed Markdown document: prose, inline code, fences, hidden parts."""
    from app.governance.dispatch import analyse_code, looks_like_python

    blocks: dict[int, _Block] = {}
    for paragraph in doc.paragraphs:
        block = blocks.setdefault(paragraph.block, _Block(bias={}))
        _paragraph(paragraph, col.child(block=paragraph.block), block)
        examples = _example_list(paragraph)
        for number, line in paragraph.lines:
            if "://" in line:
                _prose_urls(line, number, col.child(block=paragraph.block))
            for match in _INLINE.finditer(line):
                normed = _norm(line)
                head = normed[: max(0, normed.find(_norm(match.group(0))))]
                head = head[max(head.rfind(". "), head.rfind("; ")) + 1 :]
                mention = bool(
                    examples
                    or _PROHIBITION.search(_norm(paragraph.heading))
                    or _NEGATION.search(head)
                    or (
                        re.search(r"\b(?:such as|like|e\.g\.|for example|for instance)\b", head)
                        and _DETECTION.search(head)
                    )
                )
                context = Context.MENTION if mention else None
                _inline(
                    match.group(2), number, col.child(block=paragraph.block, context=context, in_doc=True)
                )
            stripped = _INLINE.sub(" ", line)
            if _PYTHON_INLINE.match(stripped) and looks_like_python(stripped.strip()):
                # Code pasted into prose, outside any fence, is still code.
                analyse_code(stripped.strip(), "python", col.child(pin_line=number, block=paragraph.block))
                continue
            found = _PROSE_COMMAND.search(stripped)
            if found and re.search(r"\||&&|;|>>|https?://|\s-c\s", found.group(1)):
                analyse_code(found.group(1), "shell", col.child(pin_line=number, block=paragraph.block))
    for fence in doc.fences:
        lead = _norm(fence.lead)
        context = Context.EXAMPLE if _WARN_LEAD.search(lead) else None
        child = col.child(context=context, line_offset=fence.line, block=fence.block, in_doc=True)
        lang = fence.lang.split(",")[0].strip("{}.")
        if lang in SHELL_LANGS:
            analyse_code(fence.text, "shell", child)
        elif lang in PYTHON_LANGS:
            analyse_code(fence.text, "python", child)
        elif lang in JS_LANGS:
            analyse_code(fence.text, "javascript", child)
        elif lang in CODE_LANGS:
            analyse_code(fence.text, "generic", child)
        elif lang in DATA_LANGS:
            from app.governance.code import analyse_data

            analyse_data(fence.text, child)
        elif lang in ("", "text", "txt", "plain", "plaintext", "sql", "markdown", "md"):
            if looks_like_python(fence.text):
                analyse_code(fence.text, "python", child)
            elif any(_COMMAND_WORDS.match(ln.strip().lstrip("$ ")) for ln in fence.text.split("\n")[:20]):
                analyse_code(fence.text, "shell", child)
            else:
                from app.governance.code import analyse_data

                analyse_data(fence.text, child)
        owner = blocks.get(fence.block)
        if (
            owner is not None
            and context is None
            and any(p.search(_norm(fence.text)) for p in _PREREQ_SIGNALS[-2:])
        ):
            owner.prereq_signals += 1
    for hidden in doc.hidden:
        _hidden(hidden, col)
    for number in doc.padded:
        col.hit("HID-PADDING", number, "text pushed far out of view by whitespace")
    for block in blocks.values():
        _judge_block(block, col)


def analyse_text(text: str, col: Collector) -> None:
    """Analyse free text (decoded payloads, data values, hidden comments) as Markdown prose."""
    analyse_markdown(markdown.parse(text), col)


def _hidden(hidden: markdown.Hidden, col: Collector) -> None:
    """Hidden parts are analysed one level up; instructions to the agent in them are a finding alone."""
    text = _norm(hidden.text)
    if len(text.strip()) < 20:
        return
    child = col.child(context=Context.HIDDEN, pin_line=hidden.line)
    before = len(col.findings)
    analyse_text(hidden.text, child)
    found = len(col.findings) > before
    instructive = bool(_AGENT_ADDRESS.search(text)) and bool(_ACTION.search(text)) and len(text.split()) >= 6
    rule_id = "HID-HTML-COMMENT" if hidden.kind == "comment" else "HID-CSS-HIDDEN"
    if found or instructive:
        col.hit(rule_id, hidden.line, hidden.text, shift=1 if found else 0)


def _prose_urls(line: str, number: int, col: Collector) -> None:
    """Links in prose: look-alike and punycode hosts, raw IPs; collectors count less than in code."""
    from app.governance.text import host_of, host_problem, is_collector, public_ip, urls

    for url, _ in urls(line):
        host = host_of(url)
        problem = host_problem(host)
        if problem == "homoglyph":
            col.hit("HID-HOMOGLYPH-DOMAIN", number, line, detail=host)
        elif problem == "punycode":
            col.hit("HID-PUNYCODE", number, line, detail=host)
        if public_ip(host):
            col.hit("EXF-RAW-IP", number, line, detail=host)
        elif is_collector(host):
            col.hit("EXF-COLLECTOR-HOST", number, line, detail=host, shift=-1)


def _inline(code: str, line: int, col: Collector) -> None:
    from app.governance.dispatch import analyse_code

    stripped = code.strip()
    if _PYTHON_INLINE.match(stripped):
        analyse_code(stripped, "python", col.child(pin_line=line))
    elif " " in stripped and (
        _COMMAND_WORDS.match(stripped) or re.search(r"&&|\|\||;\s|\|\s*\w|\$\(", stripped)
    ):
        analyse_code(stripped, "shell", col.child(pin_line=line))


def _paragraph(paragraph: markdown.Paragraph, col: Collector, block: _Block) -> None:
    numbers = [n for n, _ in paragraph.lines]
    texts = [_norm(t) for _, t in paragraph.lines]
    flat = " ".join(texts)
    starts = [0]
    for piece in texts[:-1]:
        starts.append(starts[-1] + len(piece) + 1)

    def line_at(offset: int) -> int:
        return numbers[bisect.bisect_right(starts, offset) - 1]

    examples = _example_list(paragraph)
    for pattern in PATTERNS:
        if not _wants(flat, pattern.needs):
            continue
        for match in pattern.regex.finditer(flat):
            left, right = _sentence_bounds(flat, match.start(), match.end())
            sentence = flat[left:right]
            head = flat[left : match.start()]
            mention = examples or _is_mention(
                flat, match.start(), head, sentence, paragraph.heading, pattern.negatable
            )
            shift = pattern.shift
            if pattern.rule_id == "RES-UNBOUNDED-RETRY" and re.search(
                r"api key|token|password|credential|secret", sentence
            ):
                shift += 1
            (col.child(context=Context.MENTION) if mention else col).hit(
                pattern.rule_id, line_at(match.start()), sentence, shift=shift
            )
            if not mention:
                break
    if not examples:
        _facts(flat, line_at, col)
    _block_signals(flat, line_at, col, paragraph, block)
    _recipe(paragraph, flat, block)


def _sentence_bounds(text: str, start: int, end: int) -> tuple[int, int]:
    """The sentence around text[start:end]: from after the last stop before it to the next stop."""
    left = max(text.rfind(stop, 0, start) for stop in (". ", "! ", "? ", " - ", "; "))
    rights = [i for i in (text.find(stop, end) for stop in (". ", "! ", "? ", "; ")) if i != -1]
    return left + 1 if left >= 0 else 0, (min(rights) + 1 if rights else len(text))


# Words that say a passage is about spotting attacks, not carrying them out.
_DETECTION = re.compile(
    r"\b(?:red flags?|look(?:s|ing)? for|watch(?:es|ing)? (?:out )?for|detect\w*|flag\w*|suspicious"
    r"|malicious|attacks?|attackers?|indicators?|signatures?|dangerous|warn\w*|never|avoid|don'?t|do not"
    r"|block\w*|refuse|report\w*|scan\w* for)\b"
)


def _example_list(paragraph: markdown.Paragraph) -> bool:
    """A paragraph whose first line introduces a list of things to detect ("Look for red flags such as:")."""
    lines = [_norm(text).strip() for _, text in paragraph.lines if not text.lstrip().startswith("#")]
    return len(lines) > 1 and lines[0].endswith(":") and bool(_DETECTION.search(lines[0]))


def _is_mention(text: str, start: int, head: str, sentence: str, heading: str, negatable: bool) -> bool:
    """Quoted in talk about attacks, or negated where negation flips the meaning."""
    prefix = text[max(0, start - 200) : start]
    quoted = (
        (prefix.count('"') % 2 == 1)
        or (prefix.count("`") % 2 == 1)
        or bool(re.search(r"(^|\s)'[^']*$", prefix))
    )
    if quoted and (_MENTION.search(sentence) or _CAUTION.search(_norm(heading))):
        return True
    if _PROHIBITION.search(_norm(heading)):
        return True
    return negatable and bool(_NEGATION.search(head))


def _facts(text: str, line_at: Callable[[int], int], col: Collector) -> None:
    """Record what the paragraph names or asks for, sentence by sentence, unless negated."""
    present = [(p, f) for p, f, needs in _FACT_PATTERNS if needs.search(text) and p.search(text)]
    standing_anywhere = _STANDING_NEEDS.search(text) and _STANDING.search(text)
    if not present and not standing_anywhere:
        return
    # A stop ends a sentence only before a space: `scripts/sync.sh` stays whole.
    for match in re.finditer(r"(?:[^.!?;]|[.!?;](?!\s|$))+(?:[.!?;]|$)", text):
        sentence = match.group()
        standing = _STANDING.search(sentence) if standing_anywhere else None
        if _NEGATION.search(sentence) and not standing:
            continue
        line = line_at(match.start())
        for pattern, fact in present:
            if pattern.search(sentence):
                col.note(fact, line, sentence)
        if standing:
            col.note(Fact.STANDING, line, sentence)
            col.hit("BM-STANDING-ORDER", line, sentence)


def _block_signals(
    text: str, line_at: Callable[[int], int], col: Collector, paragraph: markdown.Paragraph, block: _Block
) -> None:
    for index, (needs, pattern) in enumerate(_BIAS):
        if not _wants(text, needs):
            continue
        match = pattern.search(text)
        if match and index not in block.bias:
            block.bias[index] = line_at(match.start())
    mass = _MASS.search(text) if "send" in text else None
    if mass and _MESSAGE.search(text) and _QUOTED_LINK.search(text):
        col.hit("BM-PHISHING", line_at(mass.start()), text)
    account = _ACCOUNT.search(text) if "password" in text else None
    if account and _LITERAL_PASSWORD.search(text):
        col.hit("BM-BACKDOOR-ACCOUNT", line_at(account.start()), text[account.start() :])
    heading = _norm(paragraph.heading)
    if _PREREQ.search(heading) or _PREREQ.search(text):
        block.prereq = True
        block.prereq_line = block.prereq_line or line_at(0)
    if block.prereq:
        block.prereq_signals += sum(1 for p in _PREREQ_SIGNALS if p.search(text))
    ransom = block.ransom if block.ransom is not None else set()
    if "encrypt" in text or "lock" in text or "password-protect" in text:
        if _ENCRYPT.search(text):
            ransom.add("encrypt")
        if _ORIGINALS.search(text):
            ransom.add("delete")
    block.ransom = ransom
    if ransom >= {"encrypt", "delete"} and "reported" not in ransom:
        ransom.add("reported")
        col.hit("DES-RANSOM", line_at(0), text)


_ORIGINALS = re.compile(
    r"\b(?:delete|remove|erase|wipe|shred)\w*\s+(?:the\s+)?(?:original|unencrypted|source)\b"
)
_RECIPE_GATE = re.compile(
    r"payload|encod|protect|obfusc|scrambl|cipher|merged|encrypt|decod|decrypt|xor|invers|reconstruct|reassembl"
    r"|interleav|permut|revers|rot-?13|base ?\d\d|bytes|integers|split|chars|characters"
)
_PAYLOAD_WORDS = re.compile(
    r"\b(?:payload|encoded|protected|obfuscated|scrambled|cipher ?text|merged|encrypted|encoding)\b"
)
# Operations a reader would have to carry out to turn a blob back into text.
_DECODE_STEPS = (
    re.compile(r"\bdecod\w*|\bdecrypt\w*"),
    re.compile(r"\bxor\b"),
    re.compile(r"modular inverse|\binv\(|\bmod \d+"),
    re.compile(r"\breconstruct\w*|\breassembl\w*|\bde-?interleav\w*|\binterleav\w*"),
    re.compile(r"\bpermut\w*|\bunscrambl\w*|\breverse\w*"),
    re.compile(r"\brot-?13\b|\bbase ?\d\d\b"),
    re.compile(r"interpret (?:the )?(?:resulting )?bytes|as utf-?8|comma-separated (?:encoded )?integers"),
    re.compile(
        r"\bsplit\b[^.\n]{0,40}\b(?:parts|pieces|chunks)\b|\btak\w* (?:the )?(?:chars|characters) in order"
    ),
)


def _recipe(paragraph: markdown.Paragraph, text: str, block: _Block) -> None:
    """Collect, per block, the signs of a decode-it-yourself payload."""
    found = block.recipe if block.recipe is not None else set()
    block.recipe = found
    if _RECIPE_GATE.search(text):
        if _PAYLOAD_WORDS.search(text):
            found.add("payload")
        found.update(f"step{i}" for i, step in enumerate(_DECODE_STEPS) if step.search(text))
    # Blobs are looked for only in sections that talk about payloads or decoding at all.
    block.long_lines.extend((n, line) for n, line in paragraph.lines if len(line.strip()) >= 40)


def _judge_block(block: _Block, col: Collector) -> None:
    recipe = block.recipe or set()
    steps = sum(1 for item in recipe if item.startswith("step"))
    if "payload" in recipe and steps >= 2:
        for number, text in block.long_lines:
            if opaque(text) or any(opaque(token) for token in text.split() if len(token) >= 40):
                recipe.add("blob")
                block.blob_line = block.blob_line or number
                break
    if {"payload", "blob"} <= recipe and steps >= 2:
        col.hit("OBF-DECODE-RECIPE", block.blob_line, "an opaque payload with the steps to decode it")
    if len(block.bias) >= 2:
        line = min(block.bias.values())
        col.hit("BM-BIAS", line, f"{len(block.bias)} kinds of slanting instruction in one section")
    if block.prereq and block.prereq_signals >= 2:
        col.hit("SUP-FAKE-PREREQ", block.prereq_line, "a prerequisite that downloads and runs something")
