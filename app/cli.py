"""`skillfoundry`: run the service and its parts, manage keys, benchmark."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Annotated

import httpx
import typer

from app.config import Settings, get_settings

app = typer.Typer(help="Skillfoundry: a self-hosted skill library for LLM agents.", no_args_is_help=True)
keys_app = typer.Typer(
    help="Manage API keys of a running service (needs an admin key).", no_args_is_help=True
)
bench_app = typer.Typer(help="Benchmarks; record results in docs/benchmarks.md.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(bench_app, name="bench")

Url = Annotated[str, typer.Option("--url", envvar="SKILLFOUNDRY_URL", help="Base URL of the service.")]
ApiKeyOpt = Annotated[
    str, typer.Option("--api-key", envvar="SKILLFOUNDRY_API_KEY", help="An API key (sf_...).")
]
Host = Annotated[
    str | None, typer.Option("--host", help="Bind address [env SKILLFOUNDRY_HOST, default 127.0.0.1].")
]
Port = Annotated[int | None, typer.Option("--port", help="Port [env SKILLFOUNDRY_PORT, default 8000].")]


def _settings() -> Settings:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("pgserver", "httpx", "alembic.runtime.migration"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return get_settings()


@app.command()
def up(host: Host = None, port: Port = None) -> None:
    """Run the whole service: embedded PostgreSQL/Redis unless DATABASE_URL/REDIS_URL, worker and API."""
    from app.launcher import run_up

    settings = _settings()
    raise typer.Exit(run_up(settings, host or settings.host, port or settings.port, typer.echo))


@app.command()
def api(host: Host = None, port: Port = None, workers: int = 1) -> None:
    """Run only the API server (uvicorn); needs DATABASE_URL and REDIS_URL."""
    import uvicorn

    settings = _settings()
    settings.require_database_url()
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=host or settings.host,
        port=port or settings.port,
        workers=workers,
        log_level="info",
        access_log=False,
    )


@app.command()
def worker(
    concurrency: Annotated[int | None, typer.Option(help="Worker processes.")] = None,
    beat: Annotated[
        bool, typer.Option("--beat", help="Also run the periodic scheduler (one per deployment).")
    ] = False,
) -> None:
    """Run only a Celery worker; needs DATABASE_URL and REDIS_URL."""
    from app.evolver.celery_app import get_celery
    from app.evolver.names import Queue

    settings = _settings()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    get_celery().worker_main(
        [
            "worker", "--queues", ",".join(q.value for q in Queue),
            "--concurrency", str(concurrency or settings.worker_concurrency),
            "--loglevel", "INFO", "--hostname", "skillfoundry@%h", "--without-gossip", "--without-mingle",
        ]
        + (["--beat", "--schedule", str(settings.home.resolve() / "celerybeat-schedule")] if beat else [])
    )  # fmt: skip


@app.command()
def migrate(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
    down: Annotated[bool, typer.Option("--down", help="Downgrade to REVISION instead.")] = False,
) -> None:
    """Apply database migrations (DATABASE_URL)."""
    from app.storage import migrate as migrations

    url = _settings().require_database_url()
    if down:
        migrations.downgrade(url, revision if revision != "head" else "-1")
    else:
        migrations.upgrade(url, revision)
    typer.echo(f"database at {'down ' if down else ''}{revision}")


def _client(url: str, api_key: str) -> httpx.Client:
    return httpx.Client(base_url=url.rstrip("/"), headers={"Authorization": f"Bearer {api_key}"}, timeout=30)


def _call(response: httpx.Response) -> dict[str, object]:
    body: dict[str, object] = response.json() if response.content else {}
    if response.is_error:
        error = body.get("error", {}) if isinstance(body, dict) else {}
        typer.echo(f"error {response.status_code}: {json.dumps(error)}", err=True)
        raise typer.Exit(1)
    return body


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="A name to tell the key apart.")],
    scope: Annotated[list[str] | None, typer.Option(help="agent, reviewer, admin; repeat.")] = None,
    url: Url = "http://127.0.0.1:8000",
    api_key: ApiKeyOpt = "",
) -> None:
    """Create a key; prints it once."""
    with _client(url, api_key) as client:
        body = _call(client.post("/v1/keys", json={"name": name, "scopes": scope or ["agent"]}))
    typer.echo(f"{body['key']}\n(id {body['id']}, scopes {', '.join(map(str, body['scopes']))}; shown once)")  # type: ignore[call-overload]


@keys_app.command("list")
def keys_list(
    include_revoked: bool = False, url: Url = "http://127.0.0.1:8000", api_key: ApiKeyOpt = ""
) -> None:
    """List keys (never the keys themselves)."""
    with _client(url, api_key) as client:
        body = _call(client.get("/v1/keys", params={"include_revoked": include_revoked}))
    for item in body["items"]:  # type: ignore[attr-defined]
        state = f"revoked {item['revoked_at']}" if item["revoked_at"] else "active"
        typer.echo(
            f"{item['id']}  {item['prefix']}...  {item['name']:<20} {','.join(item['scopes']):<22} {state}"
        )


@keys_app.command("revoke")
def keys_revoke(key_id: str, url: Url = "http://127.0.0.1:8000", api_key: ApiKeyOpt = "") -> None:
    """Revoke a key by id."""
    with _client(url, api_key) as client:
        body = _call(client.delete(f"/v1/keys/{key_id}"))
    typer.echo(f"revoked {body['id']} ({body['name']})")


@bench_app.command("ingest")
def bench_ingest(
    seconds: Annotated[float, typer.Option(help="Duration of each ingest phase.")] = 20.0,
    clients: Annotated[int, typer.Option(help="Concurrent clients for batch posts.")] = 4,
    embed_seconds: Annotated[float, typer.Option(help="How long to measure worker embedding.")] = 30.0,
    url: Annotated[
        str | None, typer.Option("--url", envvar="SKILLFOUNDRY_URL", help="Bench a running service.")
    ] = None,
    api_key: Annotated[str | None, typer.Option("--api-key", envvar="SKILLFOUNDRY_API_KEY")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print results as JSON.")] = False,
) -> None:
    """Post generated 20-step trajectories; report trajectories/s, POST latency and embedding steps/s."""
    from app.bench.ingest import run_ingest_bench

    result = run_ingest_bench(
        _settings(),
        seconds=seconds,
        clients=clients,
        embed_seconds=embed_seconds,
        url=url,
        api_key=api_key,
        echo=typer.echo,
    )
    typer.echo(json.dumps(result, indent=2) if json_out else result["summary"])


@bench_app.command("evolve")
def bench_evolve(
    trajectories: Annotated[int, typer.Option(help="Generated 20-step trajectories to distill.")] = 200,
    per_event: Annotated[int, typer.Option(help="Trajectories per ingest event.")] = 10,
    seed: int = 7,
    data: Annotated[
        Path | None, typer.Option(help="JSONL of recorded trajectories instead of generated ones.")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print results as JSON.")] = False,
) -> None:
    """Distillation throughput of one worker process, observation cache share and dedup rate."""
    from app.bench.evolve import run_evolve_bench

    settings = _settings()
    result = run_evolve_bench(
        settings,
        trajectories=trajectories,
        per_event=per_event,
        seed=seed,
        data=data,
        echo=lambda t: typer.echo(t, err=True),
    )
    typer.echo(json.dumps(result, indent=2) if json_out else result["summary"])


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
