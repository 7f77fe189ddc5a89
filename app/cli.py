"""`skillfoundry`: run the service and its parts, manage keys, benchmark."""

from __future__ import annotations

import io
import json
import logging
import os
import time
import zipfile
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


@app.command()
def evolve(
    wait: Annotated[bool, typer.Option(help="Wait for the cycle to finish and print what it did.")] = True,
    timeout: Annotated[float, typer.Option(help="Seconds to wait.")] = 600.0,
    url: Url = "http://127.0.0.1:8000",
    api_key: ApiKeyOpt = "",
) -> None:
    """Run a skill evolution cycle now on a running service (needs an admin key)."""
    with _client(url, api_key) as client:
        event_id = str(_call(client.post("/v1/evolve"))["event_id"])
        typer.echo(f"event {event_id} queued", err=True)
        if not wait:
            return
        deadline = time.monotonic() + timeout
        while True:
            event = _call(client.get(f"/v1/events/{event_id}"))
            if event["status"] in ("SUCCEEDED", "FAILED"):
                break
            if time.monotonic() > deadline:
                typer.echo(
                    f"still {event['status']} after {timeout:.0f}s; poll GET /v1/events/{event_id}", err=True
                )
                raise typer.Exit(2)
            time.sleep(1.0)
    if event["status"] == "FAILED":
        typer.echo(f"cycle failed: {event.get('error')}", err=True)
        raise typer.Exit(1)
    typer.echo(json.dumps(event.get("result", {}), indent=2))


@app.command()
def export(
    directory: Annotated[Path, typer.Argument(help="Where to write one Agent Skills folder per skill.")],
    status: Annotated[str, typer.Option(help="Which skills: active, retired or all.")] = "active",
    url: Url = "http://127.0.0.1:8000",
    api_key: ApiKeyOpt = "",
) -> None:
    """Write the library's head versions as Agent Skills folders (`agentskills validate` accepts each)."""
    directory.mkdir(parents=True, exist_ok=True)
    written = 0
    with _client(url, api_key) as client:
        cursor: str | None = None
        while True:
            params: dict[str, str] = {"limit": "100"}
            if status != "all":
                params["status"] = status
            if cursor:
                params["cursor"] = cursor
            page = _call(client.get("/v1/skills", params=params))
            for item in page["items"]:  # type: ignore[attr-defined]
                response = client.get(f"/v1/skills/{item['id']}/versions/head/content")
                if response.is_error:
                    _call(response)
                with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
                    _extract(archive, directory)
                written += 1
            cursor = page.get("next_cursor")  # type: ignore[assignment]
            if not cursor:
                break
    typer.echo(f"wrote {written} skills to {directory}")


def _extract(archive: zipfile.ZipFile, directory: Path) -> None:
    """Unzip into `directory`, refusing members that would land outside it."""
    root = directory.resolve()
    for member in archive.namelist():
        target = (root / member).resolve()
        if not target.is_relative_to(root):
            raise typer.BadParameter(f"refusing to write {member!r} outside {directory}")
    archive.extractall(root)  # noqa: S202 - every member was checked above


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


eval_app = typer.Typer(help="Evaluations on recorded trajectories.", no_args_is_help=True)
app.add_typer(eval_app, name="eval")


@eval_app.command("skills", context_settings={"ignore_unknown_options": True})
def eval_skills(
    files: Annotated[
        list[str],
        typer.Argument(
            metavar="--train FILE... --test FILE...",
            help="JSONL files of API trajectory items: the runs to learn from, then the held-out runs.",
            show_default=False,
        ),
    ],
    json_out: Annotated[bool, typer.Option("--json", help="Print results as JSON.")] = False,
) -> None:
    """Learn skills from --train runs in a scratch database; score strategies against --test runs."""
    named = _eval_files(files)
    train = _trajectory_items(named["train"])
    test = _trajectory_items(named["test"])
    if not train or not test:
        raise typer.BadParameter("need trajectories in both --train and --test files")
    _eval_skills_run(_settings(), train, test, json_out=json_out)


def _eval_files(args: list[str]) -> dict[str, list[Path]]:
    """`--train a b --test c d` (or a flag per file, or `--train=a`) as lists of paths."""
    named: dict[str, list[Path]] = {"train": [], "test": []}
    current: str | None = None
    for arg in args:
        flag, equals, value = arg.partition("=")
        if flag in ("--train", "--test"):
            current = flag.removeprefix("--")
            if equals:
                named[current].append(Path(value))
        elif arg.startswith("--"):
            raise typer.BadParameter(f"unknown option {arg}")
        elif current is None:
            raise typer.BadParameter(f"'{arg}': put --train or --test before the files")
        else:
            named[current].append(Path(arg))
    return named


def _trajectory_items(paths: list[Path]) -> list[dict[str, object]]:
    """Every line of the files, checked as the API would check it; empty files are skipped."""
    from pydantic import ValidationError

    from app.api.schemas.trajectories import TrajectoryIn

    items: list[dict[str, object]] = []
    for path in paths:
        if not path.is_file():
            raise typer.BadParameter(f"{path}: no such file")
        lines = [(n, line) for n, line in enumerate(path.read_text().splitlines(), 1) if line.strip()]
        if not lines:
            typer.echo(f"warning: {path} is empty; skipped", err=True)
            continue
        for number, line in lines:
            try:
                items.append(TrajectoryIn.model_validate_json(line).model_dump())
            except ValidationError as exc:
                raise typer.BadParameter(f"{path}:{number}: not a trajectory item: {exc}") from exc
    return items


def _eval_skills_run(
    settings: Settings, train: list[dict[str, object]], test: list[dict[str, object]], *, json_out: bool
) -> None:
    """Ingest and distill `train` as the worker would, run one skill cycle, then score `test`."""
    from app.embedded import scratch_database
    from app.embedding import get_embedder
    from app.evolver import pipeline, skill_cycle, skill_eval
    from app.ingestion import service as ingestion
    from app.storage.repositories import tenants
    from app.storage.session import session_scope

    embedder = get_embedder()
    with scratch_database("sfeval-") as factory:
        with session_scope(factory) as session:
            tenant_id = tenants.create_tenant(session, "eval").id
        for n, body in enumerate(train, 1):  # one event per trajectory, in arrival order
            with session_scope(factory) as session:
                event_id = ingestion.accept(session, tenant_id, [body], schedule=False).event_id
            with session_scope(factory) as session:
                pipeline.process_ingest(session, event_id, embedder=embedder, settings=settings)
            if n % 20 == 0 or n == len(train):
                typer.echo(f"[eval] distilled {n}/{len(train)} training runs", err=True)
        with session_scope(factory) as session:
            stats = skill_cycle.evolve(
                session, tenant_id, embedder=embedder, settings=settings, batch=max(1000, len(train))
            )
        with session_scope(factory) as session:
            result = skill_eval.evaluate(session, tenant_id, test, embedder=embedder, settings=settings)
    cycle = {k: v for k, v in stats.as_dict().items() if k != "decisions"}
    training: dict[str, object] = {"train_runs": len(train), "test_runs": len(test), "cycle": cycle}
    if json_out:
        typer.echo(json.dumps({"training": training, **result.as_dict()}, indent=2))
        return
    named = [(c.skill, str(c.version), str(c.steps), c.figures) for c in result.clusters]
    rows = [
        [
            name, version, steps, str(f.runs), _eval_cell(f.micro.precision, f.macro.precision),
            _eval_cell(f.micro.recall, f.macro.recall), _eval_cell(f.micro.order, f.macro.order),
            _eval_cell(f.micro.paired_precision, f.macro.paired_precision),
            _eval_cell(f.micro.paired_recall, f.macro.paired_recall),
        ]
        for name, version, steps, f in [*named, ("total", "", "", result.total)]
    ]  # fmt: skip
    no_skill = [(str(i.unscored), i.similarity, i.task) for i in result.no_skill]
    _print_skill_eval(rows, no_skill, len(result.failed), training)


def _eval_cell(micro: float | None, macro: float | None) -> str:
    def show(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    return f"{show(micro)} ({show(macro)})"


def _print_skill_eval(
    rows: list[list[str]],
    no_skill: list[tuple[str, float | None, str]],
    failed: int,
    training: dict[str, object],
) -> None:
    """The per-cluster table (its last row the total), then the runs no skill could be scored on."""
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title="Strategy skills on held-out successful runs",
        caption="micro (macro): counts pooled over runs (mean of per-run ratios); "
        "1:1: each step paired with an action of its own",
    )
    columns = (
        "strategy skill",
        "version",
        "steps",
        "runs",
        "precision",
        "recall",
        "order",
        "1:1 prec",
        "1:1 rec",
    )
    for column in columns:
        table.add_column(column, justify="left" if column == "strategy skill" else "right")
    for n, row in enumerate(rows, 1):
        if n == len(rows):
            table.add_section()
        table.add_row(*row)
    console = Console()
    console.print(f"trained on {training['train_runs']} runs; skill cycle: {training['cycle']}", markup=False)
    console.print(table)
    console.print(f"no skill: {len(no_skill)} successful held-out run(s)")
    for reason, similarity, task in no_skill:
        shown = "-" if similarity is None else f"{similarity:.3f}"
        console.print(f"  {reason}: nearest task cluster similarity {shown}: {task[:90]!r}", markup=False)
    if failed:
        console.print(f"held-out runs that failed, not scored: {failed}")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
