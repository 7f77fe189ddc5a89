"""The MCP server (clients/python, `skillfoundry mcp`) through the MCP SDK's own client: its tools in memory
against the real app and database, and the command as a real stdio process."""

from __future__ import annotations

import socket
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import anyio
import pytest
from mcp import Client as McpClient
from mcp import StdioServerParameters, stdio_client
from mcp.types import CallToolResult, TextContent
from skillfoundry_client import Client
from skillfoundry_client.mcp_server import build_server
from sqlalchemy.orm import Session

from tests.test_client import (  # noqa: F401 (api, connect, embedder and lib are fixtures)
    KITCHEN,
    TASK,
    Library,
    accept_head,
    api,
    connect,
    embedder,
    lib,
)

T = TypeVar("T")
TOOLS = {"retrieve", "load_skill", "record_step", "finish"}


@dataclass(frozen=True)
class Kitchen:
    lib: Library
    agent: Client


@pytest.fixture
def kitchen(db: Session, lib: Library, connect: Callable[[str], Client]) -> Kitchen:  # noqa: F811
    """The kitchen library, its strategy skill accepted by a reviewer (T2), and an agent client of the app."""
    accept_head(connect, db, lib, lib.boil)
    return Kitchen(lib, connect(lib.key))


def over_mcp(sf: Client, scenario: Callable[[McpClient], Awaitable[T]]) -> T:
    """Run `scenario` with an MCP client connected in memory (initialize handshake) to a server on `sf`."""

    async def run() -> T:
        async with McpClient(build_server(sf, agent_id="mcp-x", domain="kitchen"), mode="legacy") as mcp:
            return await scenario(mcp)

    return anyio.run(run)


def text(result: CallToolResult) -> str:
    """The text a tool answered (its first content block)."""
    block = result.content[0]
    assert isinstance(block, TextContent)
    return block.text


def structured(result: CallToolResult) -> dict[str, Any]:
    """The structured answer of a call that succeeded."""
    assert not result.is_error, text(result)
    assert isinstance(result.structured_content, dict)
    return result.structured_content


class TestTools:
    def test_lists_four_tools_with_input_schemas(self) -> None:
        """retrieve, load_skill, record_step and finish, with their arguments, required ones and outputs."""

        async def scenario(mcp: McpClient) -> dict[str, Any]:
            return {tool.name: tool for tool in (await mcp.list_tools()).tools}

        tools = over_mcp(Client("http://127.0.0.1:9", "sf_unused"), scenario)
        assert set(tools) == TOOLS
        expected = {
            "retrieve": ({"task", "observation"}, {"session_id", "step", "top_k", "token_budget"}),
            "load_skill": ({"skill_id"}, {"version", "session_id"}),
            "record_step": (
                {"session_id", "action"},
                {"observation", "used_item_ids", "reward", "tool_result"},
            ),
            "finish": ({"session_id", "success"}, {"score"}),
        }
        for name, (required, optional) in expected.items():
            schema = tools[name].input_schema
            assert schema["type"] == "object" and set(schema["required"]) == required, name
            assert set(schema["properties"]) == required | optional, name
            assert tools[name].description
        assert tools["finish"].input_schema["properties"]["success"]["type"] == "boolean"
        assert "items" in tools["retrieve"].output_schema["properties"]

    def test_retrieve_gives_guidance_and_items(self, kitchen: Kitchen) -> None:
        """A one-off retrieve: the tagged guidance text, and each item with its id, kind and trust tier."""
        library = kitchen.lib

        async def scenario(mcp: McpClient) -> CallToolResult:
            return await mcp.call_tool(
                "retrieve", {"task": TASK, "observation": KITCHEN, "top_k": 20, "token_budget": 2000}
            )

        result = over_mcp(kitchen.agent, scenario)
        answer = structured(result)
        items = {i["id"]: i for i in answer["items"]}
        boil, stove = items[str(library.boil.id)], items[str(library.stove.id)]
        assert (boil["kind"], boil["trust_tier"], boil["body_available"]) == ("skill", "T2", True)
        assert (stove["kind"], stove["trust_tier"], stove["body_available"]) == ("skill", "T1", False)
        lessons = [i for i in answer["items"] if i["kind"] == "experience"]
        assert {i["id"] for i in lessons} == {str(library.do.id), str(library.avoid.id)}
        assert all(i["text"] and i["polarity"] in ("do", "avoid") for i in lessons)
        assert answer["retrieval_id"] and answer["session_id"] is None
        shown = text(result)
        assert shown.startswith("Guidance from the skill library") and answer["guidance"] in shown
        assert f"[{boil['tag']}] boil-water" in shown and f"{boil['tag']} = {library.boil.id}" in shown
        assert f"{stove['tag']} = {library.stove.id}: skill, tier T1, summary only" in shown
        assert f"retrieval_id {answer['retrieval_id']}" in shown

    def test_load_skill_gives_reviewed_bodies_only(self, kitchen: Kitchen) -> None:
        """An accepted skill's SKILL.md; an unreviewed one is a tool error naming tier_withholds_body."""
        library = kitchen.lib

        async def scenario(mcp: McpClient) -> tuple[CallToolResult, CallToolResult]:
            body = await mcp.call_tool("load_skill", {"skill_id": str(library.boil.id)})
            withheld = await mcp.call_tool("load_skill", {"skill_id": str(library.stove.id)})
            return body, withheld

        body, withheld = over_mcp(kitchen.agent, scenario)
        assert text(body).startswith("---\nname: boil-water\n") and "fill pot with water" in text(body)
        assert structured(body) == {"result": text(body)}
        assert withheld.is_error
        assert "tier_withholds_body" in text(withheld) and "no reviewer has accepted it" in text(withheld)

    def test_steps_and_finish_store_the_trajectory(self, kitchen: Kitchen) -> None:
        """retrieve, record_step, twice, then finish: each stored step names its retrieval and items used."""
        library = kitchen.lib
        run = "mcp-run-1"

        async def scenario(mcp: McpClient) -> dict[str, Any]:
            seen: dict[str, Any] = {}
            first = structured(
                await mcp.call_tool("retrieve", {"task": TASK, "observation": KITCHEN, "session_id": run})
            )
            boil = next(i for i in first["items"] if i["id"] == str(library.boil.id))
            lesson = next(i for i in first["items"] if i["kind"] == "experience")
            by_tag = await mcp.call_tool("load_skill", {"skill_id": boil["tag"], "session_id": run})
            assert text(by_tag).startswith("---\nname: boil-water\n")
            seen["step0"] = structured(
                await mcp.call_tool(
                    "record_step",
                    {
                        "session_id": run,
                        "action": "fill pot with water",
                        "reward": 0.5,
                        "used_item_ids": [boil["tag"], lesson["id"]],
                        "tool_result": "The pot is full.",
                    },
                )  # fmt: skip
            )
            second = structured(
                await mcp.call_tool(
                    "retrieve",
                    {
                        "task": TASK,
                        "observation": "The pot holds water. The stove is off.",
                        "session_id": run,
                    },
                )
            )
            seen["step1"] = structured(
                await mcp.call_tool(
                    "record_step",
                    {"session_id": run, "action": "activate stove", "used_item_ids": [str(library.boil.id)]},
                )
            )
            seen["finished"] = structured(
                await mcp.call_tool("finish", {"session_id": run, "success": True, "score": 1.0})
            )
            seen["again"] = await mcp.call_tool("finish", {"session_id": run, "success": True})
            seen.update(first=first, second=second, lesson=lesson["id"])
            return seen

        sf = kitchen.agent
        seen = over_mcp(sf, scenario)
        first, second = seen["first"], seen["second"]
        assert (first["step"], second["step"]) == (0, 1) and second["strategy_id"] == str(library.boil.id)
        assert seen["step0"]["retrieval_id"] == first["retrieval_id"]
        assert seen["step0"]["used_item_ids"] == [str(library.boil.id), seen["lesson"]]
        assert (seen["step1"]["step"], seen["step1"]["steps"]) == (1, 2)
        assert seen["finished"]["steps"] == 2 and seen["finished"]["event_id"]
        assert seen["again"].is_error and "no open run" in text(seen["again"])
        stored = sf.get_trajectory(seen["finished"]["trajectory_id"])
        assert (stored.task, stored.agent_id, stored.domain, stored.session_id) == (
            TASK,
            "mcp-x",
            "kitchen",
            run,
        )
        assert stored.outcome.success is True and stored.outcome.score == 1.0
        assert [s.retrieval_id for s in stored.steps] == [first["retrieval_id"], second["retrieval_id"]]
        assert [s.used_item_ids for s in stored.steps] == [
            [str(library.boil.id), seen["lesson"]],
            [str(library.boil.id)],
        ]
        assert stored.steps[0].observation == KITCHEN and stored.steps[0].tool_output == "The pot is full."
        assert stored.steps[0].reward == 0.5 and stored.steps[1].action == "activate stove"

    def test_mistakes_are_tool_errors(self, kitchen: Kitchen) -> None:
        """An unknown session, a tag the last retrieve did not give, a tag without its session."""

        async def scenario(mcp: McpClient) -> list[CallToolResult]:
            unknown = await mcp.call_tool("record_step", {"session_id": "nope", "action": "look"})
            await mcp.call_tool("retrieve", {"task": TASK, "observation": KITCHEN, "session_id": "s"})
            bad_tag = await mcp.call_tool(
                "record_step", {"session_id": "s", "action": "look", "used_item_ids": ["S9"]}
            )
            no_session = await mcp.call_tool("load_skill", {"skill_id": "S1"})
            return [unknown, bad_tag, no_session]

        unknown, bad_tag, no_session = over_mcp(kitchen.agent, scenario)
        assert all(r.is_error for r in (unknown, bad_tag, no_session))
        assert "no open run with session_id 'nope'" in text(unknown)
        assert "'S9' is neither a tag of the last retrieve" in text(bad_tag)
        assert "S1 is a tag: pass the session_id" in text(no_session)


@pytest.mark.e2e
class TestProcess:
    def test_stdio_command_lists_tools(self, tmp_path: Path) -> None:
        """`skillfoundry mcp` on stdio answers the handshake and lists its tools, no service behind it."""
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            unused = f"http://127.0.0.1:{probe.getsockname()[1]}"
        command = Path(sys.executable).with_name("skillfoundry")
        params = StdioServerParameters(
            command=str(command), args=["mcp", "--url", unused, "--api-key", "sf_unused"]
        )
        errlog = tmp_path / "stderr.log"

        async def scenario() -> set[str]:
            with errlog.open("w") as err, anyio.fail_after(60):
                async with McpClient(stdio_client(params, errlog=err), mode="legacy") as mcp:
                    return {tool.name for tool in (await mcp.list_tools()).tools}

        try:
            names = anyio.run(scenario)
        finally:
            sys.stderr.write(errlog.read_text())
        assert names == TOOLS
