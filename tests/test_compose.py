"""The production docker-compose.yml and Dockerfile, checked statically: no Docker engine, no database."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer
import typer.core
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"

TORCH_PIN = "torch==2.13.0"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    """The compose file's services, YAML anchors and merge keys resolved."""
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    result: dict[str, dict[str, Any]] = compose["services"]
    return result


@pytest.fixture(scope="module")
def cli_commands() -> set[str]:
    """Names of the `skillfoundry` CLI's subcommands."""
    from app.cli import app as cli_app

    group = typer.main.get_command(cli_app)
    assert isinstance(group, typer.core.TyperGroup), "the CLI should have subcommands"
    return set(group.commands)


def _words(command: str | list[str]) -> list[str]:
    """A compose `command` or Dockerfile CMD as a list of words (exec or shell form)."""
    return shlex.split(command) if isinstance(command, str) else [str(word) for word in command]


def _environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as a mapping, whether written as a mapping or as `KEY=value` items."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.partition("=")[::2] for item in env)
    return {key: str(value) for key, value in env.items()}


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (KEYWORD, arguments), comments dropped, continuations joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    return instructions


def _pip_installs() -> list[list[str]]:
    """Every `pip install` in the Dockerfile's RUN instructions, in build order, as word lists."""
    installs: list[list[str]] = []
    for keyword, arguments in _dockerfile_instructions():
        if keyword != "RUN":
            continue
        for step in re.split(r"&&|;", arguments):
            words = shlex.split(step)
            if "pip" in words and "install" in words:
                installs.append(words)
    return installs


def test_all_services_are_defined(services: dict[str, dict[str, Any]]) -> None:
    """The stack has PostgreSQL, Redis, the migration job, the API and a worker."""
    assert {"postgres", "redis", "migrate", "api", "worker"} <= set(services)


def test_postgres_image_is_pinned_pgvector_on_pg17(services: dict[str, dict[str, Any]]) -> None:
    """PostgreSQL runs a pinned pgvector 0.8 image on PostgreSQL 17, never `latest`."""
    image = services["postgres"]["image"]
    assert re.fullmatch(r"pgvector/pgvector:0\.8(\.\d+)?-pg17", image), image


def test_redis_image_is_redis_7(services: dict[str, dict[str, Any]]) -> None:
    """Redis runs a pinned Redis 7 image."""
    image = services["redis"]["image"]
    assert re.fullmatch(r"redis:7(\.\d+)*(-[a-z0-9.]+)?", image), image


def test_long_running_services_have_healthchecks(services: dict[str, dict[str, Any]]) -> None:
    """Every service except the one-shot migration job declares an enabled healthcheck."""
    for name, service in services.items():
        if name == "migrate":
            continue
        healthcheck = service.get("healthcheck") or {}
        assert healthcheck.get("test"), f"{name} has no healthcheck"
        assert not healthcheck.get("disable"), f"{name} disables its healthcheck"


def test_migrate_runs_once(services: dict[str, dict[str, Any]]) -> None:
    """The migration job is not restarted and waits for a healthy database."""
    migrate = services["migrate"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"


@pytest.mark.parametrize("name", ["api", "worker"])
def test_app_services_reach_database_and_redis(services: dict[str, dict[str, Any]], name: str) -> None:
    """The API and the worker get DATABASE_URL and REDIS_URL pointing at the compose services."""
    env = _environment(services[name])
    assert env["DATABASE_URL"].startswith("postgresql://")
    assert "@postgres:5432/" in env["DATABASE_URL"]
    assert env["REDIS_URL"].startswith("redis://redis:6379")


@pytest.mark.parametrize("name", ["api", "worker"])
def test_app_services_start_after_dependencies(services: dict[str, dict[str, Any]], name: str) -> None:
    """The API and the worker wait for healthy PostgreSQL and Redis and a finished migration."""
    depends_on = services[name]["depends_on"]
    assert depends_on["postgres"]["condition"] == "service_healthy"
    assert depends_on["redis"]["condition"] == "service_healthy"
    assert depends_on["migrate"]["condition"] == "service_completed_successfully"


def test_built_services_run_real_cli_commands(
    services: dict[str, dict[str, Any]], cli_commands: set[str]
) -> None:
    """Each service built from the Dockerfile runs `skillfoundry <subcommand>` with a real subcommand."""
    built = {name: service for name, service in services.items() if "build" in service}
    assert {"migrate", "api", "worker"} <= set(built)
    for name, service in built.items():
        words = _words(service["command"])
        assert words[0] == "skillfoundry", f"{name}: {words}"
        assert words[1] in cli_commands, f"{name}: {words[1]!r} is not one of {sorted(cli_commands)}"


def test_api_publishes_port_8000(services: dict[str, dict[str, Any]]) -> None:
    """The API listens on 8000 in the container and publishes it on a configurable host port."""
    words = _words(services["api"]["command"])
    assert words[words.index("--port") + 1] == "8000"
    assert any(str(port).endswith(":8000") for port in services["api"]["ports"])


def test_dockerfile_installs_cpu_torch_before_the_project() -> None:
    """The CPU build of torch==2.13.0 is installed before the project, so pip never fetches CUDA torch."""
    installs = _pip_installs()
    torch_steps = [i for i, words in enumerate(installs) if TORCH_PIN in words]
    project_steps = [
        i for i, words in enumerate(installs) if any(w == "." or w.startswith(".[") for w in words)
    ]
    assert torch_steps, f"no `pip install {TORCH_PIN}` in the Dockerfile"
    assert project_steps, "no `pip install .` in the Dockerfile"
    assert TORCH_CPU_INDEX in installs[torch_steps[0]]
    assert torch_steps[0] < project_steps[0]


def test_dockerfile_runs_as_non_root() -> None:
    """The image switches to a user other than root."""
    users = [arguments for keyword, arguments in _dockerfile_instructions() if keyword == "USER"]
    assert users, "the Dockerfile never sets USER"
    assert users[-1].split(":")[0] not in {"root", "0"}


def test_dockerfile_cmd_is_a_real_cli_command(cli_commands: set[str]) -> None:
    """The image's default command is `skillfoundry <subcommand>` with a real subcommand."""
    cmds = [arguments for keyword, arguments in _dockerfile_instructions() if keyword == "CMD"]
    assert cmds, "the Dockerfile has no CMD"
    cmd = cmds[-1]
    words = _words(json.loads(cmd) if cmd.startswith("[") else cmd)
    assert words[0] == "skillfoundry"
    assert words[1] in cli_commands, f"{words[1]!r} is not one of {sorted(cli_commands)}"
