"""An MCP server on the skill library, so agents that speak MCP (Claude Code, IDE agents) use it without code.

    skillfoundry mcp --url http://127.0.0.1:8000 --api-key sf_...     # stdio; --http for streamable HTTP

Four tools run the same loop as `AgentSession`: `retrieve` before acting (guidance for the prompt and
the items behind it), `load_skill` for a reviewed skill's SKILL.md, `record_step` after acting, and
`finish`, which posts the run as one trajectory. Open runs live in this process, keyed by the agent's
`session_id`, until `finish`. Needs the `mcp` extra: `pip install -e 'clients/python[mcp]'`.
"""

from __future__ import annotations

import logging
import re
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, TextContent
from pydantic import BaseModel, Field

from skillfoundry_client.agent import (
    MAX_TOKEN_BUDGET,
    MAX_USED_ITEMS,
    MIN_TOKEN_BUDGET,
    AgentSession,
    Guidance,
    format_guidance,
)
from skillfoundry_client.client import Client
from skillfoundry_client.errors import APIConnectionError, AuthenticationError, SkillfoundryError
from skillfoundry_client.models import RetrievedItem

log = logging.getLogger("skillfoundry_client.mcp")
_TAG = re.compile(r"[SE][0-9]+")

DEFAULT_AGENT_ID = "mcp-agent"
DEFAULT_PORT = 8765
MAX_SESSIONS = 1000
MAX_TOP_K = 50

INSTRUCTIONS = """\
A skill library: lessons from earlier runs and reviewed procedures (skills).
Loop: call `retrieve` with the task and what you see before you act, and follow the guidance that fits;
`load_skill` gives a listed skill's full procedure. After acting, call `record_step` with what you did and
the ids (or tags, e.g. S1) of the items you used; at the end, `finish` with whether the task succeeded.
Use one `session_id` for the whole task: the library learns from the finished run."""


class Item(BaseModel):
    """One item of a retrieval: a skill (name, description) or an experience (a lesson)."""

    tag: str = Field(description="Its tag in the guidance text, e.g. S1 or E2.")
    id: str
    kind: str = Field(description="skill or experience.")
    trust_tier: str | None = Field(description="Skills: T1 unreviewed (summary only), T2+ reviewed.")
    shown: bool = Field(description="Whether the guidance text shows it (it fitted the token budget).")
    body_available: bool = Field(description="Skills: load_skill gives its SKILL.md.")
    score: float
    name: str | None = None
    description: str | None = None
    level: str | None = None
    version: int | None = None
    pinned: bool | None = Field(default=None, description="Skills: the strategy pinned to this session.")
    text: str | None = Field(default=None, description="Experiences: the lesson.")
    polarity: str | None = Field(default=None, description="Experiences: do or avoid.")


class Retrieved(BaseModel):
    """What `retrieve` answers: the guidance text and the items behind it."""

    retrieval_id: str
    session_id: str | None
    step: int
    strategy_id: str | None
    guidance: str = Field(description="The text to put in the prompt; empty when nothing fits.")
    items: list[Item]


class Recorded(BaseModel):
    """A step held in the session until `finish`."""

    session_id: str
    step: int = Field(description="The step's index in the run, from 0.")
    steps: int = Field(description="Steps recorded so far.")
    retrieval_id: str | None
    used_item_ids: list[str]


class Finished(BaseModel):
    """The run, posted: poll the event to see the library learn from it."""

    session_id: str
    trajectory_id: str
    event_id: str | None
    steps: int


Text = Annotated[str, Field(min_length=1, max_length=64 * 1024)]
SessionId = Annotated[str, Field(min_length=1, max_length=256)]


class _ToolSession(AgentSession):
    """An `AgentSession` whose next retrieval may name its step number."""

    next_step: int | None = None

    def _retrieve_args(self, observation: str, plan_step: str | None) -> dict[str, Any]:
        args = super()._retrieve_args(observation, plan_step)
        if self.next_step is not None:
            args["step"] = self.next_step
        return args


@dataclass
class _Run:
    session: _ToolSession
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Runs:
    """Open runs by session id; past `limit`, the least recently used is dropped (an abandoned run)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._runs: OrderedDict[str, _Run] = OrderedDict()
        self._lock = threading.Lock()

    def open(self, session_id: str, make: Callable[[], _ToolSession]) -> _Run:
        """The run of `session_id`, started by `make()` if there is none."""
        with self._lock:
            run = self._runs.get(session_id)
            if run is None:
                run = self._runs[session_id] = _Run(make())
                while len(self._runs) > self.limit:
                    dropped, old = self._runs.popitem(last=False)
                    log.warning("dropped the unfinished run %s (%d steps)", dropped, len(old.session.steps))
            self._runs.move_to_end(session_id)
            return run

    def get(self, session_id: str) -> _Run:
        """The open run of `session_id`; a tool error if there is none."""
        with self._lock:
            run = self._runs.get(session_id)
            if run is None:
                raise ToolError(
                    f"no open run with session_id {session_id!r}: call retrieve with this session_id first "
                    "(finish ends a run)"
                )
            self._runs.move_to_end(session_id)
            return run

    def close(self, session_id: str) -> None:
        """Forget the run of `session_id`."""
        with self._lock:
            self._runs.pop(session_id, None)


def build_server(
    client: Client,
    *,
    agent_id: str = DEFAULT_AGENT_ID,
    domain: str | None = None,
    max_sessions: int = MAX_SESSIONS,
) -> MCPServer[Any]:
    """An MCP server whose tools act on the library through `client`, as agent `agent_id`."""
    server: MCPServer[Any] = MCPServer("skillfoundry", instructions=INSTRUCTIONS)
    runs = _Runs(max_sessions)

    def start(task: str, session_id: str) -> _ToolSession:
        return _ToolSession(client, task, agent_id=agent_id, domain=domain, session_id=session_id)

    @server.tool(structured_output=True)
    def retrieve(
        task: Annotated[Text, Field(description="The whole task, as given to you.")],
        observation: Annotated[Text, Field(description="What you see now: the state, a file, an error.")],
        session_id: Annotated[
            SessionId | None,
            Field(description="One id for the whole task, for record_step and finish; keeps its first task."),
        ] = None,
        step: Annotated[
            int | None, Field(ge=0, description="The step number (default: steps recorded in the session).")
        ] = None,
        top_k: Annotated[int | None, Field(ge=1, le=MAX_TOP_K, description="Items at most (8).")] = None,
        token_budget: Annotated[
            int | None,
            Field(
                ge=MIN_TOKEN_BUDGET,
                le=MAX_TOKEN_BUDGET,
                description="Tokens the guidance text may take (500).",
            ),
        ] = None,
    ) -> Annotated[CallToolResult, Retrieved]:
        """Ask the skill library what fits this step, before you act.

        Returns guidance to follow: lessons from earlier runs and skills (name and description; load_skill
        gives a skill's procedure), each tagged [S1], [E1], ... with its id and trust tier.
        """
        with _answers():
            if session_id is None:
                guidance = _one_off(client, task, observation, step, top_k, token_budget, domain)
            else:
                run = runs.open(session_id, lambda: start(task, session_id))
                with run.lock:
                    session = run.session
                    session.top_k = top_k or session.top_k
                    session.token_budget = token_budget or session.token_budget
                    session.next_step = step
                    guidance = session.step(observation)
        result = _retrieved(guidance, session_id, step)
        return CallToolResult(
            content=[TextContent(type="text", text=_guidance_text(result))],
            structured_content=result.model_dump(mode="json"),
        )

    @server.tool()
    def load_skill(
        skill_id: Annotated[
            str, Field(min_length=1, description="A skill's id, or its tag (S1) with the session_id.")
        ],
        version: Annotated[
            int | None, Field(ge=1, description="A version number (default: the one retrieve listed).")
        ] = None,
        session_id: Annotated[
            SessionId | None, Field(description="The session whose last retrieve listed the skill.")
        ] = None,
    ) -> str:
        """The full SKILL.md of a skill retrieve listed: its procedure, when to use it, its evidence.

        Only reviewed skills (trust tier T2 and up) have a body for agents; for the others, follow
        their description.
        """
        if session_id is None:
            if _TAG.fullmatch(skill_id.strip("[] ").upper()):
                raise ToolError(
                    f"{skill_id} is a tag: pass the session_id of its retrieve, or the skill's id"
                )
            with _answers(skill_id):
                return client.get_version(skill_id, version if version is not None else "head").content
        run = runs.get(session_id)
        with run.lock, _answers(skill_id):
            session = run.session
            try:
                if version is None:
                    return session.load_skill(skill_id)
                item = session.guidance.item(skill_id) if session.guidance else None
                return client.get_version(item.id if item else skill_id, version).content
            except KeyError as error:
                raise ToolError(f"{skill_id} is not a tag of the last retrieve in this session") from error

    @server.tool(structured_output=True)
    def record_step(
        session_id: Annotated[SessionId, Field(description="The session_id given to retrieve.")],
        action: Annotated[Text, Field(description="What you did at this step.")],
        observation: Annotated[
            Text | None, Field(description="What you acted on (default: the last retrieve's observation).")
        ] = None,
        used_item_ids: Annotated[
            list[str] | None,
            Field(
                max_length=MAX_USED_ITEMS,
                description="Items of the last retrieve you acted on: ids or tags (S1, E2).",
            ),
        ] = None,
        reward: Annotated[float | None, Field(allow_inf_nan=False, description="A reward, if any.")] = None,
        tool_result: Annotated[
            str | None, Field(max_length=64 * 1024, description="What the action returned.")
        ] = None,
    ) -> Recorded:
        """Record what you did at this step, after acting, with the items you used (ids or tags)."""
        run = runs.get(session_id)
        with run.lock, _answers():
            session = run.session
            retrieval_id = session.guidance.retrieval_id if session.guidance else None
            used = [_used_id(u, session.guidance) for u in used_item_ids or ()]
            try:
                step = session.record(action, observation, used=used, reward=reward, tool_result=tool_result)
            except ValueError as error:
                raise ToolError(
                    "give the observation: no retrieve came before this step in the session"
                ) from error
            return Recorded(
                session_id=session_id,
                step=len(session.steps) - 1,
                steps=len(session.steps),
                retrieval_id=retrieval_id,
                used_item_ids=step.get("used_item_ids", []),
            )

    @server.tool(structured_output=True)
    def finish(
        session_id: Annotated[SessionId, Field(description="The session_id of the run.")],
        success: Annotated[bool, Field(description="Whether the task was done.")],
        score: Annotated[float | None, Field(ge=0.0, le=1.0, description="How well, from 0 to 1.")] = None,
    ) -> Finished:
        """End the run: post its steps to the library, which learns from them, and forget the session."""
        run = runs.get(session_id)
        with run.lock, _answers():
            session = run.session
            # A second finish racing the first gets the same trajectory.
            trajectory_id = session.trajectory_id or session.finish(success=success, score=score)
        runs.close(session_id)
        return Finished(
            session_id=session_id,
            trajectory_id=trajectory_id,
            event_id=session.event_id,
            steps=len(session.steps),
        )

    return server


def serve(
    url: str | None = None,
    api_key: str | None = None,
    *,
    http: bool = False,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    agent_id: str = DEFAULT_AGENT_ID,
    domain: str | None = None,
) -> None:
    """Serve the tools on stdio, or on streamable HTTP at http://HOST:PORT/mcp; blocks until stopped."""
    # Requests are logged on stderr only when they fail; stdout carries the protocol on stdio.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    with Client(url, api_key) as client:
        server = build_server(client, agent_id=agent_id, domain=domain)
        if http:
            server.run("streamable-http", host=host, port=port)
        else:
            server.run("stdio")


def _one_off(
    client: Client,
    task: str,
    observation: str,
    step: int | None,
    top_k: int | None,
    token_budget: int | None,
    domain: str | None,
) -> Guidance:
    """A retrieval outside any session, formatted as a session would."""
    budget = token_budget or 500
    retrieval = client.retrieve(
        task, observation, step=step, domain=domain, top_k=top_k or 8, token_budget=budget
    )
    prompt, tags, shown = format_guidance(retrieval, budget)
    return Guidance(
        retrieval_id=retrieval.retrieval_id,
        step=step or 0,
        items=retrieval.items,
        tags=tags,
        prompt=prompt,
        shown=shown,
        strategy_id=retrieval.strategy_id,
    )


def _retrieved(guidance: Guidance, session_id: str | None, step: int | None) -> Retrieved:
    tag_of = {item_id: tag for tag, item_id in guidance.tags.items()}
    shown = {item.id for item in guidance.shown}
    return Retrieved(
        retrieval_id=guidance.retrieval_id,
        session_id=session_id,
        step=step if step is not None else guidance.step,
        strategy_id=guidance.strategy_id,
        guidance=guidance.prompt,
        items=[_item(i, tag_of[i.id], i.id in shown) for i in guidance.items],
    )


def _item(item: RetrievedItem, tag: str, shown: bool) -> Item:
    return Item(
        tag=tag,
        id=item.id,
        kind=item.kind,
        trust_tier=item.trust_tier,
        shown=shown,
        body_available=item.kind == "skill" and (item.body_url is not None or item.body is not None),
        score=item.score,
        name=item.name,
        description=item.description,
        level=item.level,
        version=item.version,
        pinned=item.pinned,
        text=item.text,
        polarity=item.polarity,
    )


def _guidance_text(result: Retrieved) -> str:
    """The guidance, then the shown items' tags, ids and tiers, and the retrieval id."""
    shown = [i for i in result.items if i.shown]
    if not shown:
        return f"The skill library has nothing for this step. (retrieval_id {result.retrieval_id})"
    lines = [result.guidance, "", "Items (tag = id):"]
    for item in shown:
        if item.kind == "skill":
            body = "load_skill gives its procedure" if item.body_available else "summary only, not reviewed"
            lines.append(f"- {item.tag} = {item.id}: skill, tier {item.trust_tier or '?'}, {body}")
        else:
            lines.append(f"- {item.tag} = {item.id}: experience")
    lines.append(f"retrieval_id {result.retrieval_id}")
    return "\n".join(lines)


def _used_id(used: str, guidance: Guidance | None) -> str:
    """An item id for a tag or an id; a tool error for anything else, before it lands in the run."""
    item = guidance.item(used) if guidance else None
    if item is not None:
        return item.id
    try:
        return str(uuid.UUID(used))
    except ValueError:
        raise ToolError(
            f"used_item_ids: {used!r} is neither a tag of the last retrieve in this session nor an item id"
        ) from None


@contextmanager
def _answers(skill_id: str | None = None) -> Iterator[None]:
    """Turn the library's refusals into tool errors the agent can read and act on."""
    try:
        yield
    except SkillfoundryError as error:
        raise ToolError(_explain(error, skill_id)) from error


def _explain(error: SkillfoundryError, skill_id: str | None) -> str:
    if error.code == "tier_withholds_body":
        return (
            f"skill {skill_id} has no body for agents yet (tier_withholds_body): no reviewer has accepted "
            "it, so only its name and description are served. Follow its description instead."
        )
    if error.code == "skill_not_found" or error.code == "skill_version_not_found":
        return f"no such skill or version: {skill_id} ({error.code})"
    if isinstance(error, APIConnectionError):
        return f"the skill library did not answer ({error.code}): {error.message}"
    if isinstance(error, AuthenticationError):
        return "the skill library refused the API key (unauthorized): set --api-key or SKILLFOUNDRY_API_KEY"
    return f"the skill library refused ({error.code}, HTTP {error.status}): {error.message}"
