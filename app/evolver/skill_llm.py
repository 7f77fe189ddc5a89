"""Skill distillers behind one interface: the heuristic draft as is, or an LLM's edit of it.

Every skill starts as a heuristic draft (`skill_distill`): a strategy, functional or atomic SKILL.md
built from recorded runs. A `SkillDistiller` turns that draft into the document the cycle writes.
`HeuristicDistiller` keeps the draft. `LLMDistiller` asks an OpenAI-compatible chat-completions
endpoint (`SKILLFOUNDRY_LLM_*`) to rewrite its description, When to use, Procedure and Pitfalls, given
example runs, failed endings, known mistakes and the current version (so it edits, not rewrites).
The model answers a JSON object that must pass `Answer` (length limits, a "Not for" clause, and no
action in backticks that is not one of the draft's); the draft's Evidence section is kept verbatim,
the metadata gains `distiller: llm` and `draft-sha256` (what the edited draft said, so that the
cycle asks again only when a draft changes), and the new document must pass `skill_md.validate`.
Any failure is a `Rejected` with a reason code, never an exception, so that the cycle falls back to
the heuristic draft.

Retries: the openai client itself retries 408, 409, 429 and 5xx answers, timeouts and connection
errors `llm_max_retries` times, waiting as `Retry-After`/`retry-after-ms` say (up to 60 s) or else
0.5 s doubling to at most 8 s, less up to 25 % jitter. What still fails after that is `Rejected`.

Budget: each tenant may spend `llm_skill_tokens_per_day` tokens a UTC day, counted in Redis from the
`usage.total_tokens` of every answer (estimated from the text when a server reports none). A call is
refused once the counter reaches the budget, and when Redis cannot be read, so that nothing is spent
unmetered. Workers running at once may each finish one call past the budget.

The prompt lives in `prompts/skill_distill.v1.md`; `prompt_hash` is the SHA-256 of the exact messages
sent, and results carry the prompt's version name.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING, Annotated, Protocol, Self

import openai
import redis
from openai.types.chat import ChatCompletion
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from app import skill_md
from app.evolver import skill_refine
from app.evolver.llm import LazyClient
from app.evolver.skill_distill import AvoidNote, RunView, verb_of
from app.skill_md import EVIDENCE, PITFALLS, PROCEDURE, WHEN_TO_USE, Section, SkillDocument

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletionMessageParam

    from app.config import Settings

log = logging.getLogger(__name__)

PROMPT_VERSION = "skill_distill.v1"
HEURISTIC = "heuristic"
LLM = "llm"
# Metadata an LLM-written SKILL.md gains: who wrote it, and which draft it edited.
DISTILLER_KEY = "distiller"
DRAFT_KEY = "draft-sha256"

DESCRIPTION_CHARS = 1024
STEP_CHARS = 300
MAX_STEPS = 30
MAX_PITFALLS = 10
# Bounds for the prompt: a few runs say enough, and a long prompt costs every call.
MAX_EXAMPLES = 3
MAX_EXAMPLE_ACTIONS = 40
MAX_FAILURES = 8
MAX_AVOID = 8
ERROR_CHARS = 160
# Rejection details quote at most this much: enough to see what went wrong, not a whole answer.
DETAIL_CHARS = 500
# A day's counter outlives its day, so a late call near midnight still finds it.
BUDGET_TTL = timedelta(days=2)

_SLOT = re.compile(r"<[A-Za-z_][\w-]*(?::[^<>]*)?>")
_FENCE = re.compile(r"^\s*```[A-Za-z0-9_-]*[ \t]*\n?(.*?)\n?[ \t]*```\s*$", re.DOTALL)
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")
_MARKER = re.compile(r"^<!-- (system|user) -->[ \t]*$", re.MULTILINE)
_LINK = re.compile(r"\]\(\s*([^)\s]+)[^)]*\)")
_NUMBERING = re.compile(r"^\s*(?:\d+[.)]|[-*])\s+")
_NOT_FOR = re.compile(
    r"\b(?:not\s+(?:for|a|an|meant|intended|to\s+be\s+used)|do\s+not\s+use|don't\s+use)\b", re.IGNORECASE
)
_WHEN = re.compile(r"\b(?:use|when|before|after)\b", re.IGNORECASE)


@dataclass(frozen=True)
class FailedEnding:
    """The last move of a failed run, and its error if it raised one."""

    action: str
    error: str | None = None


@dataclass(frozen=True)
class DistillContext:
    """What a distiller may know besides the draft: the source's runs and the current version."""

    tenant_id: uuid.UUID
    level: str
    domain: str
    examples: tuple[tuple[str, ...], ...] = ()  # successful runs' actions, in order
    failures: tuple[FailedEnding, ...] = ()
    avoid: tuple[AvoidNote, ...] = ()
    head: SkillDocument | None = None  # the current version, which an LLM edits rather than rewrites


@dataclass(frozen=True)
class Distilled:
    """The document to write and how it was made."""

    doc: SkillDocument
    distiller: str
    llm_model: str | None = None
    prompt_hash: str | None = None
    rewrite_reason: str | None = None
    prompt_version: str | None = None


@dataclass(frozen=True)
class Rejected:
    """Why a distiller produced nothing usable; the caller keeps the heuristic draft."""

    reason: str  # a code: malformed_json, schema, invalid_skill, timeout, budget_exhausted, ...
    detail: str
    prompt_hash: str | None = None
    prompt_version: str | None = None
    llm_model: str | None = None


class SkillDistiller(Protocol):
    """Turns a heuristic draft into the document to write."""

    name: str

    def distill(self, draft: SkillDocument, context: DistillContext) -> Distilled | Rejected:
        """The document to write for `draft`, or why there is none."""
        ...


class DistillerConfigError(RuntimeError):
    """The configured skill distiller cannot run as configured; the message says what to set."""


class HeuristicDistiller:
    """The offline distiller: the heuristic draft is the document."""

    name = HEURISTIC

    def distill(self, draft: SkillDocument, context: DistillContext) -> Distilled | Rejected:  # noqa: ARG002
        """The draft, unchanged."""
        return Distilled(doc=draft, distiller=self.name)


def build_context(
    *,
    tenant_id: uuid.UUID,
    level: str,
    domain: str,
    runs: Sequence[RunView],
    avoid: Sequence[AvoidNote],
    head: SkillDocument | None,
    do_min_score: float,
) -> DistillContext:
    """The context of one source from its evidence runs: best successes first, then failed endings."""
    ordered = sorted(runs, key=lambda r: (-(r.score or 0.0), str(r.id)))
    won = [r for r in ordered if skill_refine.succeeded(r, do_min_score)]
    lost = [r for r in ordered if not skill_refine.succeeded(r, do_min_score) and r.steps]
    examples = tuple(
        tuple(s.action for s in r.steps if not s.error)[:MAX_EXAMPLE_ACTIONS] for r in won[:MAX_EXAMPLES]
    )
    failures: list[FailedEnding] = []
    for run in lost:
        # The step that raised the last error says more than a final `look around`.
        last = next((s for s in reversed(run.steps) if s.error), run.steps[-1])
        ending = FailedEnding(action=last.action, error=last.error)
        if ending not in failures:
            failures.append(ending)
    notes = sorted(avoid, key=lambda n: (-n.failures, n.template))
    return DistillContext(
        tenant_id=tenant_id,
        level=level,
        domain=domain,
        examples=examples,
        failures=tuple(failures[:MAX_FAILURES]),
        avoid=tuple(notes),
        head=head,
    )


# --- the answer -------------------------------------------------------------------------------------

Step = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=STEP_CHARS)]


@dataclass(frozen=True)
class Allowed:
    """The actions and links an answer may use: those of the draft, slots renamed at will."""

    templates: frozenset[tuple[str, ...]]
    verbs: frozenset[tuple[str, ...]]
    links: frozenset[str]

    @classmethod
    def of(cls, draft: SkillDocument) -> Allowed:
        """What the draft's own text uses, its Evidence section aside."""
        text = _prose(draft)
        spans = [s for s in _backticked(text) if _tokens(s)]
        templates = frozenset(_tokens(s) for s in spans)
        verbs = frozenset(_tokens(verb_of(s)) for s in spans if verb_of(s) and not _SLOT.match(verb_of(s)))
        return cls(templates, verbs, frozenset(_LINK.findall(text)))

    def problem(self, field_name: str, text: str) -> str | None:
        """Why `text` uses an action or a link the draft does not, or None."""
        if text.count("`") % 2:
            return f"{field_name} has an unmatched backtick"
        for span in _backticked(text):
            tokens = _tokens(span)
            if not tokens or all(t == "<>" for t in tokens):
                continue  # empty, or a slot named on its own
            if tokens not in self.templates and tokens not in self.verbs:
                return f"{field_name} uses `{_clip(span, 80)}`, which is not one of the draft's actions"
        for target in _LINK.findall(text):
            if target not in self.links:
                return f"{field_name} links to {_clip(target, 80)!r}, which the draft does not"
        return None


class Answer(BaseModel):
    """The JSON object the model must answer; validate with `context={"allowed": Allowed.of(draft)}`."""

    model_config = ConfigDict(frozen=True, extra="ignore", str_strip_whitespace=True)

    description: str = Field(min_length=1, max_length=DESCRIPTION_CHARS)
    when_to_use: str = Field(min_length=1, max_length=2 * DESCRIPTION_CHARS)
    procedure: list[Step] = Field(min_length=1, max_length=MAX_STEPS)
    pitfalls: list[Step] = Field(default_factory=list, max_length=MAX_PITFALLS)
    rewrite_reason: str | None = Field(default=None, max_length=DESCRIPTION_CHARS)

    @model_validator(mode="after")
    def _check(self, info: ValidationInfo) -> Self:
        if not _NOT_FOR.search(self.description):
            raise ValueError('the description does not say what the skill is not for (a "Not for" clause)')
        if not _WHEN.search(self.description):
            raise ValueError("the description does not say when to use the skill")
        allowed = (info.context or {}).get("allowed")
        if isinstance(allowed, Allowed):
            fields = [("description", self.description), ("when_to_use", self.when_to_use)]
            fields += [(f"procedure step {n}", s) for n, s in enumerate(self.procedure, start=1)]
            fields += [(f"pitfall {n}", p) for n, p in enumerate(self.pitfalls, start=1)]
            for name, text in fields:
                problem = allowed.problem(name, text)
                if problem:
                    raise ValueError(problem)
        return self


class InvalidAnswer(ValueError):
    """The model's answer cannot be used; `reason` is the rejection code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def parse_answer(content: str, draft: SkillDocument) -> Answer:
    """The validated answer in `content` (a JSON object, fences allowed); else raise `InvalidAnswer`."""
    fenced = _FENCE.match(content)
    if fenced is not None:
        content = fenced.group(1)
    try:
        data: object = json.loads(content)
    except json.JSONDecodeError as exc:
        raise InvalidAnswer("malformed_json", f"not JSON ({exc.msg}): {content!r}") from exc
    if not isinstance(data, dict):
        raise InvalidAnswer("schema", f"JSON {type(data).__name__}, not an object")
    try:
        return Answer.model_validate(data, context={"allowed": Allowed.of(draft)})
    except ValidationError as exc:
        raise InvalidAnswer("schema", _errors(exc)) from exc


def to_document(answer: Answer, draft: SkillDocument) -> SkillDocument:
    """The draft with the answer's description, When to use, Procedure and Pitfalls; Evidence as is."""
    steps = [_flat(_NUMBERING.sub("", step)) for step in answer.procedure]
    pitfalls = [_flat(_NUMBERING.sub("", pitfall)) for pitfall in answer.pitfalls]
    procedure = [*_legend(draft), *(f"{n}. {step}" for n, step in enumerate(steps, start=1))]
    sections = [
        Section(WHEN_TO_USE, _flat(answer.when_to_use)),
        Section(PROCEDURE, "\n".join(procedure)),
        Section(PITFALLS, "\n".join(f"- {p}" for p in pitfalls) if pitfalls else "None seen yet."),
    ]
    evidence = draft.section(EVIDENCE)
    if evidence is not None:
        sections.append(evidence)
    return SkillDocument(
        name=draft.name,
        description=_flat(answer.description),
        metadata={**draft.metadata, DISTILLER_KEY: LLM, DRAFT_KEY: draft_fingerprint(draft)},
        sections=tuple(sections),
        title=draft.title,
        license=draft.license,
        compatibility=draft.compatibility,
        allowed_tools=draft.allowed_tools,
        extra=draft.extra,
    )


def draft_fingerprint(draft: SkillDocument) -> str:
    """A short SHA-256 of what a draft says, its Evidence section and metadata aside (they move every run)."""
    said = [draft.description, *(f"{s.title}\x00{s.body}" for s in draft.sections if s.title != EVIDENCE)]
    return hashlib.sha256("\x01".join(said).encode("utf-8")).hexdigest()[:16]


# --- the prompt -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prompt:
    """A versioned prompt file: the system message and the user message template."""

    version: str
    system: str
    user: str

    def placeholders(self) -> frozenset[str]:
        """The names the user template asks for."""
        return frozenset(_PLACEHOLDER.findall(self.user))

    def fill(self, values: dict[str, str]) -> str:
        """The user message with every placeholder filled in one pass (a value's own braces stay)."""
        missing = self.placeholders() - values.keys()
        if missing:
            raise KeyError(f"prompt {self.version} needs {sorted(missing)}")
        return _PLACEHOLDER.sub(lambda m: values[m.group(1)], self.user)


@lru_cache
def load_prompt(version: str = PROMPT_VERSION) -> Prompt:
    """The prompt `prompts/<version>.md` shipped with this package."""
    text = resources.files("app.evolver").joinpath("prompts").joinpath(f"{version}.md").read_text("utf-8")
    parts = _MARKER.split(text)
    # parts: preamble, "system", its text, "user", its text.
    if parts[1::2] != ["system", "user"]:
        raise ValueError(f"prompt {version} needs one '<!-- system -->' and then one '<!-- user -->' line")
    return Prompt(version=version, system=parts[2].strip(), user=parts[4].strip())


def build_messages(
    draft: SkillDocument, context: DistillContext, prompt: Prompt | None = None
) -> list[ChatCompletionMessageParam]:
    """The system and user messages asking the model to edit `draft`."""
    prompt = prompt or load_prompt()
    allowed = sorted(dict.fromkeys(s for s in _backticked(_prose(draft)) if _tokens(s)))
    examples = [
        f"{n}. " + " -> ".join(actions) for n, actions in enumerate(context.examples, start=1) if actions
    ]
    failures = [
        f"- {f.action}" + (f" -> error: {_clip(_flat(f.error), ERROR_CHARS)}" if f.error else "")
        for f in context.failures
    ]
    verbs = {verb_of(t) for t in allowed}
    relevant = [n for n in context.avoid if verb_of(n.template) in verbs][:MAX_AVOID]
    avoid = [f"- `{n.template}`: {_clip(_flat(n.text), 2 * ERROR_CHARS)}" for n in relevant]
    user = prompt.fill(
        {
            "level": context.level,
            "domain": context.domain or "(none)",
            "templates": "\n".join(f"- `{t}`" for t in allowed) or "(none)",
            "draft": skill_md.render(draft).rstrip(),
            "head": (
                "````markdown\n" + skill_md.render(context.head).rstrip() + "\n````"
                if context.head is not None
                else "None: this is a new skill."
            ),
            "examples": "\n".join(examples) or "(none)",
            "failures": "\n".join(failures) or "(none)",
            "avoid": "\n".join(avoid) or "(none)",
        }
    )
    return [{"role": "system", "content": prompt.system}, {"role": "user", "content": user}]


def hash_messages(messages: Sequence[ChatCompletionMessageParam]) -> str:
    """The SHA-256 (hex) of messages, as canonical JSON."""
    canonical = json.dumps(list(messages), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def prompt_hash(draft: SkillDocument, context: DistillContext) -> str:
    """The SHA-256 (hex) of the messages `LLMDistiller.distill` sends for this draft and context."""
    return hash_messages(build_messages(draft, context))


# --- the LLM distiller -----------------------------------------------------------------------------


class TokenBudget:
    """A tenant's LLM tokens per UTC day, counted in Redis."""

    def __init__(
        self,
        client: redis.Redis,
        tokens_per_day: int,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.client = client
        self.tokens_per_day = tokens_per_day
        self.clock = clock

    def key(self, tenant_id: uuid.UUID) -> str:
        """The counter of the tenant's current UTC day."""
        return f"skillfoundry:llm-tokens:skills:{tenant_id}:{self.clock().strftime('%Y%m%d')}"

    def spent(self, tenant_id: uuid.UUID) -> int:
        """Tokens the tenant spent today; raises `redis.RedisError` when Redis cannot say."""
        raw = self.client.get(self.key(tenant_id))
        return int(raw) if raw is not None else 0

    def charge(self, tenant_id: uuid.UUID, tokens: int) -> None:
        """Add tokens to today's counter; raises `redis.RedisError` when Redis cannot take them."""
        key = self.key(tenant_id)
        pipe = self.client.pipeline()
        pipe.incrby(key, tokens)
        pipe.expire(key, BUDGET_TTL)
        pipe.execute()


class LLMDistiller:
    """A `SkillDistiller` that asks an OpenAI-compatible chat-completions endpoint to edit each draft."""

    name = LLM

    def __init__(
        self,
        base_url: str,
        api_key: str,
        model: str,
        *,
        redis_client: redis.Redis,
        tokens_per_day: int,
        timeout_s: float = 20.0,
        max_retries: int = 2,
        prompt_version: str = PROMPT_VERSION,
    ) -> None:
        self.base_url = base_url
        self.model = model
        self.budget = TokenBudget(redis_client, tokens_per_day)
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.prompt = load_prompt(prompt_version)
        self._openai = LazyClient(base_url, api_key, timeout_s=timeout_s, max_retries=max_retries)

    def __repr__(self) -> str:
        # The API key stays out of reprs and logs.
        return f"LLMDistiller(base_url={self.base_url!r}, model={self.model!r})"

    def close(self) -> None:
        """Close the HTTP client, if one was made."""
        self._openai.close()

    def prompt_hash(self, draft: SkillDocument, context: DistillContext) -> str:
        """The SHA-256 (hex) of the messages `distill` sends for this draft and context."""
        return hash_messages(build_messages(draft, context, self.prompt))

    def distill(self, draft: SkillDocument, context: DistillContext) -> Distilled | Rejected:
        """The model's edit of the draft, validated; else `Rejected` (logged), never an exception."""
        messages = build_messages(draft, context, self.prompt)
        digest = hash_messages(messages)

        def reject(reason: str, detail: str) -> Rejected:
            detail = _clip(_flat(detail), DETAIL_CHARS)
            log.warning(
                "LLM skill distillation of %s rejected (%s: %s) [model %s, prompt %s %s]",
                draft.name,
                reason,
                detail,
                self.model,
                self.prompt.version,
                digest[:12],
            )
            return Rejected(reason, detail, digest, self.prompt.version, self.model)

        try:
            spent = self.budget.spent(context.tenant_id)
        except (redis.RedisError, ValueError) as exc:
            # Without a counter the spend could not be metered, so nothing is spent.
            return reject("budget_unavailable", f"{type(exc).__name__}: {exc}")
        if spent >= self.budget.tokens_per_day:
            return reject(
                "budget_exhausted", f"{spent} of {self.budget.tokens_per_day} tokens spent today (UTC)"
            )

        try:
            response: object = self._openai.get().chat.completions.create(
                model=self.model,
                messages=messages,
                response_format={"type": "json_object"},
                temperature=0,
            )
        except openai.APITimeoutError as exc:
            return reject("timeout", f"no answer within {self.timeout_s} s: {exc}")
        except openai.APIConnectionError as exc:
            return reject("connection", f"{exc}: {exc.__cause__ or ''}")
        except openai.RateLimitError as exc:
            return reject("rate_limited", f"HTTP 429 after {self.max_retries} retries: {exc}")
        except openai.InternalServerError as exc:
            return reject("server_error", f"HTTP {exc.status_code} after {self.max_retries} retries: {exc}")
        except openai.APIStatusError as exc:
            return reject("http_error", f"HTTP {exc.status_code}: {exc}")
        except openai.APIError as exc:
            return reject("api_error", f"{type(exc).__name__}: {exc}")
        except ValueError as exc:
            # A 200 whose body is not JSON (or not UTF-8): the client hands the decoding error through.
            return reject("malformed_response", f"unreadable response body: {exc}")

        self._charge(context.tenant_id, response, messages, draft.name)
        try:
            content = _content_of(response)
            answer = parse_answer(content, draft)
        except InvalidAnswer as exc:
            return reject(exc.reason, exc.detail)
        doc = to_document(answer, draft)
        problems = skill_md.validate(doc)
        if problems:
            return reject("invalid_skill", "; ".join(problems))
        log.debug("LLM %s distilled %s [prompt %s]", self.model, draft.name, digest[:12])
        return Distilled(
            doc=doc,
            distiller=self.name,
            llm_model=self.model,
            prompt_hash=digest,
            rewrite_reason=_flat(answer.rewrite_reason or "") or None,
            prompt_version=self.prompt.version,
        )

    def _charge(
        self,
        tenant_id: uuid.UUID,
        response: object,
        messages: Sequence[ChatCompletionMessageParam],
        skill: str,
    ) -> None:
        usage = response.usage if isinstance(response, ChatCompletion) else None
        if usage is not None and usage.total_tokens > 0:
            tokens = usage.total_tokens
        else:
            # Some local servers report no usage; the text still cost tokens.
            sent = "".join(str(m.get("content", "")) for m in messages)
            answer = _content_or_empty(response)
            tokens = skill_md.estimate_tokens(sent) + skill_md.estimate_tokens(answer)
        try:
            self.budget.charge(tenant_id, tokens)
        except redis.RedisError as exc:
            # The tokens are spent either way; throwing the answer away would waste them.
            log.warning("could not count %d LLM tokens of %s against the budget: %s", tokens, skill, exc)


def get_skill_distiller(settings: Settings, redis_client: redis.Redis | None) -> SkillDistiller:
    """The distiller `settings.skill_distiller` names; the LLM one needs an endpoint and Redis."""
    if settings.skill_distiller == HEURISTIC:
        return HeuristicDistiller()
    if settings.skill_distiller != LLM:
        raise DistillerConfigError(
            f"SKILLFOUNDRY_SKILL_DISTILLER={settings.skill_distiller!r} is unknown: use 'heuristic' or 'llm'."
        )
    if not settings.llm_base_url:
        raise DistillerConfigError(
            "SKILLFOUNDRY_SKILL_DISTILLER=llm needs an LLM endpoint: set SKILLFOUNDRY_LLM_BASE_URL to an "
            "OpenAI-compatible URL ending in /v1 (and SKILLFOUNDRY_LLM_MODEL), or set "
            "SKILLFOUNDRY_SKILL_DISTILLER=heuristic."
        )
    if redis_client is None:
        raise DistillerConfigError(
            "SKILLFOUNDRY_SKILL_DISTILLER=llm needs Redis to count its token budget: set REDIS_URL."
        )
    return LLMDistiller(
        base_url=settings.llm_base_url,
        api_key=settings.llm_api_key,
        model=settings.llm_model,
        redis_client=redis_client,
        tokens_per_day=settings.llm_skill_tokens_per_day,
        timeout_s=settings.llm_timeout_s,
        max_retries=settings.llm_max_retries,
    )


# --- helpers ----------------------------------------------------------------------------------------


def _content_of(response: object) -> str:
    # The client does not validate response shapes (lenient servers abound), so check them here.
    if not isinstance(response, ChatCompletion):
        raise InvalidAnswer("malformed_response", f"response is {type(response).__name__}, not a completion")
    if not isinstance(response.choices, list) or not response.choices:
        raise InvalidAnswer("malformed_response", "the response has no choices")
    content = getattr(getattr(response.choices[0], "message", None), "content", None)
    if not isinstance(content, str):
        raise InvalidAnswer("malformed_response", "the response has no message content")
    return content


def _content_or_empty(response: object) -> str:
    try:
        return _content_of(response)
    except InvalidAnswer:
        return ""


def _prose(doc: SkillDocument) -> str:
    """The description and every section but Evidence: the text an answer may draw actions from."""
    return "\n".join([doc.description, *(s.body for s in doc.sections if s.title != EVIDENCE)])


def _legend(draft: SkillDocument) -> list[str]:
    """The slot legend the draft's Procedure opens with ("`<object>`: varies by task..."), if any."""
    section = draft.section(PROCEDURE)
    if section is None:
        return []
    lines: list[str] = []
    for line in section.body.split("\n"):
        if not line.startswith("`<"):
            break
        lines.append(line)
    return [*lines, ""] if lines else []


def _backticked(text: str) -> list[str]:
    return [part.strip() for part in text.split("`")[1::2]]


def _tokens(span: str) -> tuple[str, ...]:
    """A template's words, lowercased, with every slot (whatever its name) as `<>`."""
    return tuple(_SLOT.sub("<>", span.lower()).split())


def _errors(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors()[:5]:
        where = ".".join(str(part) for part in error["loc"])
        parts.append(f"{where}: {error['msg']}" if where else str(error["msg"]))
    return "; ".join(parts)


def _flat(text: str) -> str:
    return " ".join(text.split())


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[: limit - 3].rstrip() + "..."
