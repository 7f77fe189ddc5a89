"""Optional LLM rewriting of experience texts through an OpenAI-compatible chat-completions endpoint.

The evolver writes every experience with a heuristic sentence first ("When you are in the kitchen
and the stove is off, do `activate stove` because it raised the score."). When
`SKILLFOUNDRY_LLM_BASE_URL` names an endpoint (OpenAI, vLLM, llama.cpp, Ollama, ... ending in
`/v1`), a `Polisher` may rewrite that sentence. The rewrite is only advice: the model must answer
with a JSON object `{"text": "..."}` whose text passes `validate_text`, and anything else (network
errors, rate limits after the client's own retries, timeouts, malformed or invalid answers) is
logged as a warning and yields None, so that the caller keeps the heuristic text. `polish` never
raises for such failures: a flaky endpoint must not fail an evolution job.

`prompt_hash` is the SHA-256 of the exact messages sent, so that a stored experience can record
which prompt produced its text.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import openai
from openai.types.chat import ChatCompletion

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletionMessageParam

    from app.config import Settings

log = logging.getLogger(__name__)

MAX_WORDS = 64
# The prompt asks for fewer words than validation allows, so that a slightly long answer still passes.
PROMPT_WORDS = 50
SITUATION_CHARS = 600
# Warnings quote at most this much of a bad answer: enough to see what went wrong, not a whole essay.
LOG_CHARS = 200

SYSTEM_PROMPT = (
    "You rewrite experience notes for an autonomous agent. A note tells the agent what to do, or what "
    "to avoid, in one kind of situation, and why. Keep the meaning of the draft; make it clear, concrete "
    "about the situation and general over the objects of the task. Answer with a JSON object of the form "
    '{"text": "..."} and nothing else.'
)

REASONS = {
    "reward_rose": "it raised the score",
    "errored": "it produced an error",
    "no_change": "it changed nothing",
    "diverged_from_success": "successful runs did something else here",
    "ended_failed_episode": "it ended an episode that failed",
}

_SLOT = re.compile(r"<[A-Za-z_][\w-]*(?::[^<>]*)?>")
_FENCE = re.compile(r"^\s*```[A-Za-z0-9_-]*[ \t]*\n?(.*?)\n?[ \t]*```\s*$", re.DOTALL)
_WORD = re.compile(r"[\w'-]+")
# Glue words may fill a slot ("the red ball") yet appear in any sentence; they reveal no object.
_GLUE_WORDS = frozenset(
    "a an the of to in on at and or with for from into onto some any this that these those".split()
)


@dataclass(frozen=True)
class Draft:
    """A heuristic experience text and what it was derived from."""

    text: str
    polarity: str
    action_template: str
    action_example: str
    situation: str
    task: str
    reason: str


@dataclass(frozen=True)
class Polished:
    """A validated rewrite and the model that wrote it."""

    text: str
    model: str


class Polisher(Protocol):
    """Something that may rewrite a draft's text; None means keep the heuristic text."""

    def polish(self, draft: Draft) -> Polished | None:
        """A validated rewrite of the draft, or None."""
        ...


class InvalidAnswer(ValueError):
    """The model's answer is not a usable experience text; the message says why."""


def build_messages(draft: Draft) -> list[ChatCompletionMessageParam]:
    """The system and user messages asking the model to rewrite `draft`."""
    verb = "avoid" if draft.polarity == "avoid" else "do"
    rules = [
        'Start with "When" and describe the situation.',
        f"Use at most {PROMPT_WORDS} words, in one or two sentences.",
        f'Use the word "{verb}" for the action.',
        "Keep the reason.",
        "Plain text: no markdown, no lists.",
    ]
    fillers = task_slot_fillers(draft.action_template, draft.action_example)
    if fillers:
        named = ", ".join(f'"{filler}"' for filler in fillers)
        rules.append(
            "Write the action with its template; say in words what a <task:...> slot stands for (for "
            f'example "the substance named in the task") and never name the example\'s object ({named}), '
            "since other tasks use other objects."
        )
    reason = REASONS.get(draft.reason, draft.reason.replace("_", " "))
    user = "\n".join(
        [
            "Rewrite this experience note.",
            "Rules:",
            *(f"- {rule}" for rule in rules),
            "",
            f"Task: {draft.task}",
            f"Situation: {_clip(draft.situation, SITUATION_CHARS)}",
            f"Action template: {draft.action_template}",
            f"Action example: {draft.action_example}",
            f"Polarity: {verb}",
            f"Reason: {reason} ({draft.reason})",
            f"Draft note: {draft.text}",
            "",
            'Answer as {"text": "..."}.',
        ]
    )
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def prompt_hash(draft: Draft) -> str:
    """The SHA-256 (hex) of the messages `build_messages` sends for `draft`."""
    canonical = json.dumps(build_messages(draft), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def task_slot_fillers(template: str, example: str) -> list[str]:
    """The words of `example` that fill the `<task:...>` slots of `template` (empty if it has none)."""
    if "<task:" not in template:
        return []
    template_tokens = template.split()
    pattern_parts: list[str] = []
    task_groups: list[int] = []
    group = 0
    for token in template_tokens:
        part: list[str] = []
        cursor = 0
        for slot in _SLOT.finditer(token):
            part.append(re.escape(token[cursor : slot.start()]))
            # A slot may take several example tokens ("red ball"), hence a lazy match across spaces.
            part.append(r"(.+?)")
            group += 1
            if slot.group().startswith("<task:"):
                task_groups.append(group)
            cursor = slot.end()
        part.append(re.escape(token[cursor:]))
        pattern_parts.append("".join(part))
    match = re.fullmatch(r"\s*" + r"\s+".join(pattern_parts) + r"\s*", example, re.IGNORECASE)
    if match is not None:
        return [match.group(index).strip() for index in task_groups]
    # The example does not follow the template (hand-edited, or cut): every example word that is not a
    # literal word of the template may be the object, which errs towards rejecting a leak.
    literal = _literal_words(template)
    leftovers = [word for word in _WORD.findall(example) if word.lower() not in literal]
    return [" ".join(leftovers)] if leftovers else []


def validate_text(text: str, draft: Draft) -> str:
    """The text, stripped, if it is a usable rewrite of `draft`; else raise `InvalidAnswer`."""
    text = " ".join(text.split())
    if not text:
        raise InvalidAnswer("empty text")
    words = len(text.split())
    if words > MAX_WORDS:
        raise InvalidAnswer(f"{words} words, more than {MAX_WORDS}")
    if not text.lower().startswith("when"):
        raise InvalidAnswer('does not start with "When"')
    if "```" in text:
        raise InvalidAnswer("contains a code fence")
    verb = "avoid" if draft.polarity == "avoid" else "do"
    # "don't" must not count as "do": the apostrophe is part of the word here.
    if not re.search(rf"(?<![\w']){verb}(?![\w'])", text, re.IGNORECASE):
        raise InvalidAnswer(f'lacks the word "{verb}"')
    literal = _literal_words(draft.action_template)
    for filler in task_slot_fillers(draft.action_template, draft.action_example):
        for word in _WORD.findall(filler):
            lowered = word.lower()
            if lowered in _GLUE_WORDS or lowered in literal:
                continue
            if re.search(rf"(?<!\w){re.escape(word)}(?!\w)", text, re.IGNORECASE):
                raise InvalidAnswer(f'names the task object "{word}"')
    return text


def parse_answer(content: str, draft: Draft) -> str:
    """The validated text of a model answer `{"text": "..."}`, fences allowed; else raise `InvalidAnswer`."""
    fenced = _FENCE.match(content)
    if fenced is not None:
        content = fenced.group(1)
    try:
        data: object = json.loads(content)
    except json.JSONDecodeError as exc:
        raise InvalidAnswer(f"not JSON ({exc.msg})") from exc
    if not isinstance(data, dict):
        raise InvalidAnswer(f"JSON {type(data).__name__}, not an object")
    text = data.get("text")
    if not isinstance(text, str):
        raise InvalidAnswer('no string "text" field')
    return validate_text(text, draft)


class LazyClient:
    """One `openai.OpenAI` client, built on first use and shared by the threads of a worker."""

    def __init__(self, base_url: str, api_key: str, *, timeout_s: float, max_retries: int) -> None:
        self._base_url = base_url
        self._api_key = api_key  # kept out of reprs and logs
        self._timeout_s = timeout_s
        self._max_retries = max_retries
        self._client: openai.OpenAI | None = None
        self._lock = threading.Lock()

    def get(self) -> openai.OpenAI:
        """The client, built once."""
        with self._lock:
            if self._client is None:
                self._client = openai.OpenAI(
                    base_url=self._base_url,
                    api_key=self._api_key,
                    timeout=self._timeout_s,
                    max_retries=self._max_retries,
                )
            return self._client

    @property
    def current(self) -> openai.OpenAI | None:
        """The client if it was built, else None."""
        return self._client

    def close(self) -> None:
        """Close the client, if one was made."""
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None


class OpenAIPolisher:
    """A `Polisher` that asks an OpenAI-compatible chat-completions endpoint."""

    def __init__(
        self, base_url: str, api_key: str, model: str, timeout_s: float = 20.0, max_retries: int = 2
    ) -> None:
        self.base_url = base_url
        self.model = model
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self._openai = LazyClient(base_url, api_key, timeout_s=timeout_s, max_retries=max_retries)

    def __repr__(self) -> str:
        # The API key stays out of reprs and logs.
        return f"OpenAIPolisher(base_url={self.base_url!r}, model={self.model!r})"

    def close(self) -> None:
        """Close the HTTP client, if one was made."""
        self._openai.close()

    def prompt_hash(self, draft: Draft) -> str:
        """The SHA-256 (hex) of the prompt `polish` sends for `draft`."""
        return prompt_hash(draft)

    def polish(self, draft: Draft) -> Polished | None:
        """A validated rewrite of the draft, or None (logged) when the endpoint or its answer fails."""
        messages = build_messages(draft)
        digest = prompt_hash(draft)
        try:
            response: object = self._openai.get().chat.completions.create(
                model=self.model,
                messages=messages,
                response_format={"type": "json_object"},
                temperature=0,
            )
        except openai.APIError as exc:
            # Timeouts, refused connections and error statuses, after the client's own retries.
            self._warn(type(exc).__name__, str(exc), digest)
            return None
        except ValueError as exc:
            # A 200 whose body is not JSON (or not UTF-8): the client hands the decoding error through.
            self._warn("unreadable response", str(exc), digest)
            return None
        try:
            content = _content_of(response)
        except InvalidAnswer as exc:
            self._warn("malformed response", str(exc), digest)
            return None
        try:
            text = parse_answer(content, draft)
        except InvalidAnswer as exc:
            self._warn("invalid answer", f"{exc}; answer {_clip(content, LOG_CHARS)!r}", digest)
            return None
        log.debug("LLM %s polished a draft [prompt %s]: %s", self.model, digest[:12], text)
        return Polished(text=text, model=self.model)

    def _warn(self, reason: str, detail: str, digest: str) -> None:
        log.warning(
            "LLM polish failed, keeping the heuristic text (%s: %s) [model %s, prompt %s]",
            reason,
            _clip(detail, 2 * LOG_CHARS),
            self.model,
            digest[:12],
        )


def get_polisher(settings: Settings) -> Polisher | None:
    """An `OpenAIPolisher` for the configured endpoint, or None when no LLM is configured."""
    if not settings.llm_base_url:
        return None
    return OpenAIPolisher(
        base_url=settings.llm_base_url,
        api_key=settings.llm_api_key,
        model=settings.llm_model,
        timeout_s=settings.llm_timeout_s,
        max_retries=settings.llm_max_retries,
    )


def _content_of(response: object) -> str:
    # The client does not validate response shapes (lenient servers abound), so check them here.
    if not isinstance(response, ChatCompletion):
        raise InvalidAnswer(f"response is {type(response).__name__}, not a chat completion")
    choices = response.choices
    if not isinstance(choices, list) or not choices:
        raise InvalidAnswer("no choices")
    message = getattr(choices[0], "message", None)
    content = getattr(message, "content", None)
    if not isinstance(content, str):
        raise InvalidAnswer("no message content")
    return content


def _literal_words(template: str) -> frozenset[str]:
    return frozenset(word.lower() for word in _WORD.findall(_SLOT.sub(" ", template)))


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[: limit - 3].rstrip() + "..."
