"""`skillfoundry`: run the service and its parts, manage keys, benchmark."""

from __future__ import annotations

import io
import json
import os
import time
import zipfile
from pathlib import Path
from typing import Annotated, Literal

import httpx
import typer

from app.config import Settings, get_settings
from app.errors import AppError
from app.observability.logs import configure_logging, logging_config

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
    settings = get_settings()
    configure_logging(settings.log_format)  # SKILLFOUNDRY_LOG_FORMAT=json: one JSON object per line
    return settings


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
        log_config=logging_config(settings.log_format),  # applied in each uvicorn worker process
    )


@app.command()
def worker(
    concurrency: Annotated[int | None, typer.Option(help="Worker processes.")] = None,
    beat: Annotated[
        bool, typer.Option("--beat", help="Also run the periodic scheduler (one per deployment).")
    ] = False,
) -> None:
    """Run only a Celery worker; needs DATABASE_URL and REDIS_URL."""
    from app.embedding.sentence import bound_kernel_cache
    from app.evolver.celery_app import get_celery
    from app.evolver.names import Queue

    settings = _settings()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    bound_kernel_cache()  # inherited by the pool processes, which load the model
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


@app.command()
def backup(path: Annotated[Path, typer.Argument(help="The dump file to write.")]) -> None:
    """Dump the database (embedded in SKILLFOUNDRY_HOME, or DATABASE_URL) to PATH; safe while running."""
    from app.backup import BackupError, Refused, database_url
    from app.backup import backup as dump

    try:
        with database_url(_settings(), typer.echo) as url:
            dump(url, path, typer.echo)
    except BackupError as exc:
        typer.echo(f"Backup {'refused' if isinstance(exc, Refused) else 'failed'}: {exc}", err=True)
        raise typer.Exit(1) from exc


@app.command()
def restore(
    path: Annotated[Path, typer.Argument(help="A dump written by `skillfoundry backup`.")],
    force: Annotated[bool, typer.Option("--force", help="Replace a database that is not empty.")] = False,
) -> None:
    """Load a backup into an empty database (embedded in SKILLFOUNDRY_HOME, or DATABASE_URL)."""
    from app.backup import BackupError, Refused, database_url
    from app.backup import restore as load

    try:
        with database_url(_settings(), typer.echo, create=True) as url:
            load(url, path, typer.echo, force=force)
    except BackupError as exc:
        typer.echo(f"Restore {'refused' if isinstance(exc, Refused) else 'failed'}: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo("Start the service on it with `skillfoundry up` (it applies any newer migrations).")


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


@app.command(name="import")
def import_skills(
    path: Annotated[Path, typer.Argument(help="A skill folder, a folder of skill folders, or a .zip.")],
    provenance: Annotated[str, typer.Option(help="imported or authored.")] = "imported",
    domain: Annotated[str | None, typer.Option(help="Domain to file the skills under.")] = None,
    url: Url = "http://127.0.0.1:8000",
    api_key: ApiKeyOpt = "",
) -> None:
    """Import Agent Skills into a running service (reviewer key): each is validated, scanned, tiered."""
    from app.governance import archive

    if not path.exists():
        raise typer.BadParameter(f"{path} does not exist")
    try:
        packages = archive.from_path(path)
    except AppError as error:
        typer.echo(f"refused ({error.code}): {error.message} {json.dumps(error.detail)}", err=True)
        raise typer.Exit(1) from error
    params = {"provenance": provenance, **({"domain": domain} if domain else {})}
    failed = 0
    with _client(url, api_key) as client:
        for package in packages:
            response = client.post(
                "/v1/skills",
                content=archive.to_zip(package),
                headers={"Content-Type": "application/zip"},
                params=params,
            )
            where = package.folder or path.name
            if response.is_error:
                failed += 1
                problem = response.json().get("error", {})
                typer.echo(f"FAILED   {where}: {problem.get('code')}: {problem.get('message')}", err=True)
                continue
            for item in response.json()["items"]:
                skill = item["skill"]
                state = "unchanged" if item["unchanged"] else f"v{item['version']}"
                served = "" if item["is_head"] else f"; agents keep v{skill['head_version']}"
                typer.echo(
                    f"{item['trust_tier']:3} {item['risk_level']:8} {skill['name']} {state} "
                    f"({item['findings']} findings{served})"
                )
    typer.echo(f"imported {len(packages) - failed} of {len(packages)} skills", err=True)
    if failed:
        raise typer.Exit(1)


@app.command(name="mcp")
def mcp_server(
    http: Annotated[bool, typer.Option("--http", help="Serve streamable HTTP at /mcp, not stdio.")] = False,
    host: Annotated[str, typer.Option("--host", help="Bind address with --http.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port with --http.")] = 8765,
    agent_id: Annotated[
        str, typer.Option("--agent-id", envvar="SKILLFOUNDRY_AGENT_ID", help="Agent id of the runs posted.")
    ] = "mcp-agent",
    domain: Annotated[str | None, typer.Option(help="Domain to retrieve from and post runs under.")] = None,
    url: Url = "http://127.0.0.1:8000",
    api_key: ApiKeyOpt = "",
) -> None:
    """Serve the library to MCP agents (Claude Code, IDEs): retrieve, load_skill, record_step, finish."""
    try:
        from skillfoundry_client.mcp_server import serve
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in ("mcp", "skillfoundry_client"):
            raise
        typer.echo(f"{exc}: `skillfoundry mcp` needs pip install -e 'clients/python[mcp]'", err=True)
        raise typer.Exit(1) from exc
    serve(url, api_key, http=http, host=host, port=port, agent_id=agent_id, domain=domain)


@app.command()
def rescan() -> None:
    """Scan every stored version last scanned by an older rule set (the worker also does this itself)."""
    from app.governance import gate
    from app.storage.session import make_engine, make_sessionmaker, session_scope

    engine = make_engine(_settings().require_database_url(), pool_size=1)
    factory = make_sessionmaker(engine)
    totals = {"scanned": 0, "quarantined": 0, "changed": 0}
    try:
        while True:
            with session_scope(factory) as session:
                stats = gate.rescan_stale(session)
            totals = {k: totals[k] + getattr(stats, k) for k in totals}
            if stats.scanned < gate.RESCAN_BATCH:
                break
    finally:
        engine.dispose()
    typer.echo(json.dumps(totals))


@app.command()
def scan(
    directory: Annotated[Path, typer.Argument(help="A skill folder, or a folder of skill folders.")],
    jsonl: Annotated[bool, typer.Option("--jsonl", help="One JSON verdict per line.")] = False,
    by_file: Annotated[bool, typer.Option("--by-file", help="Group each skill's findings by file.")] = False,
    llm: Annotated[bool, typer.Option("--llm", help="Ask the configured LLM for a second opinion.")] = False,
) -> None:
    """Scan skills for risk (offline, nothing is run): one verdict per folder holding a SKILL.md."""
    from app.governance import find_skills, scan_folder

    if not directory.is_dir():
        raise typer.BadParameter(f"{directory} is not a folder")
    reviewer = None
    if llm:
        from app.governance.llm import get_reviewer

        reviewer = get_reviewer(get_settings())
        if reviewer is None:
            typer.echo("no LLM configured (SKILLFOUNDRY_LLM_BASE_URL); scanning without it", err=True)
    root = directory.resolve()
    single = len(skills := find_skills(root)) == 1 and skills[0] == root
    flagged = 0
    for folder in skills:
        name = folder.name if single else folder.relative_to(root).as_posix()
        verdict = scan_folder(folder, skill=name)
        if reviewer is not None:
            from app.governance.llm import with_opinion
            from app.governance.scanner import read_folder

            verdict = with_opinion(verdict, reviewer.review(read_folder(folder), verdict))
        flagged += verdict.malicious
        if jsonl:
            typer.echo(json.dumps(verdict.as_dict(by_file=by_file), ensure_ascii=False))
            continue
        label = "MALICIOUS" if verdict.malicious else "ok"
        typer.echo(f"{label:9} {verdict.score:.2f}  {name}  ({len(verdict.findings)} findings)")
        shown = [f for f in verdict.findings if f.severity > 0]
        if by_file:
            for file in sorted({f.file for f in shown}):
                typer.echo(f"    {file}")
                for finding in (f for f in shown if f.file == file):
                    label, where = finding.severity.label, f":{finding.line}"
                    typer.echo(f"      {label:8} {finding.rule_id:22} {where}  {finding.snippet}")
        else:
            for finding in shown:
                where = f"{finding.file}:{finding.line}"
                typer.echo(f"    {finding.severity.label:8} {finding.rule_id:22} {where}  {finding.snippet}")
    if not jsonl:
        typer.echo(f"{len(skills)} skills scanned, {flagged} flagged malicious")


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
    precision: Annotated[
        Literal["auto", "float32", "bfloat16"] | None,
        typer.Option(help="Embedding precision instead of SKILLFOUNDRY_EMBEDDING_PRECISION."),
    ] = None,
) -> None:
    """Distillation throughput of one worker process, observation cache share and dedup rate."""
    from app.bench.evolve import run_evolve_bench

    settings = _settings()
    if precision is not None:
        settings = settings.model_copy(update={"embedding_precision": precision})
    result = run_evolve_bench(
        settings,
        trajectories=trajectories,
        per_event=per_event,
        seed=seed,
        data=data,
        echo=lambda t: typer.echo(t, err=True),
    )
    typer.echo(json.dumps(result, indent=2) if json_out else result["summary"])


@bench_app.command("retrieve")
def bench_retrieve(
    experiences: Annotated[int | None, typer.Option(help="Experiences [100000; --small 2000].")] = None,
    skills: Annotated[int | None, typer.Option(help="Skills [5000; --small 100].")] = None,
    tenants: Annotated[int | None, typer.Option(help="Tenants sharing them [4; --small 2].")] = None,
    queries: Annotated[int | None, typer.Option(help="Queries per latency/recall phase [500; 40].")] = None,
    seconds: Annotated[float | None, typer.Option(help="Each queries/s phase [10; --small 2].")] = None,
    seed: int = 11,
    small: Annotated[bool, typer.Option("--small", help="A quick run on a small library.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print results as JSON.")] = False,
) -> None:
    """Load a synthetic library; report /v1/retrieve latency, queries/s and HNSW recall@10 vs the aims."""
    from app.bench.retrieve import resolve_sizes, run_retrieve_bench

    settings = _settings()
    sizes = resolve_sizes(
        small=small, experiences=experiences, skills=skills, tenant_count=tenants, queries=queries,
        seconds=seconds,
    )  # fmt: skip
    result = run_retrieve_bench(settings, sizes, seed=seed, echo=lambda t: typer.echo(t, err=True))
    typer.echo(json.dumps(result, indent=2) if json_out else result["summary"])


@bench_app.command("load")
def bench_load(
    rate: Annotated[float, typer.Option(help="Requests per second offered (open loop, Poisson).")] = 200.0,
    seconds: Annotated[float, typer.Option(help="How long the load runs.")] = 300.0,
    tenants: Annotated[int, typer.Option(help="Tenants of the private stack.")] = 4,
    agents: Annotated[int, typer.Option(help="Simulated agents, spread over the tenants.")] = 200,
    concurrency: Annotated[int, typer.Option(help="Most requests in flight at once.")] = 256,
    api_workers: Annotated[int, typer.Option(help="uvicorn worker processes of the private stack.")] = 2,
    trajectory_share: Annotated[float, typer.Option(help="Share of POST /v1/trajectories.")] = 0.1,
    repeat_share: Annotated[
        float, typer.Option(help="Share of retrieves repeating a common observation (query cache).")
    ] = 0.5,
    seed_runs: Annotated[int, typer.Option(help="Runs posted per tenant to seed a library (0: none).")] = 24,
    sample_every: Annotated[float, typer.Option(help="Seconds between memory samples.")] = 5.0,
    seed: int = 5,
    url: Annotated[
        str | None, typer.Option("--url", envvar="SKILLFOUNDRY_URL", help="Load a running service.")
    ] = None,
    api_key: Annotated[
        list[str] | None,
        typer.Option("--api-key", envvar="SKILLFOUNDRY_API_KEY", help="With --url: an admin key per tenant."),
    ] = None,
    api_pid: Annotated[int | None, typer.Option(help="With --url: the API's pid (memory).")] = None,
    worker_pid: Annotated[int | None, typer.Option(help="With --url: the worker's pid (memory).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print results as JSON.")] = False,
) -> None:
    """Mixed open-loop traffic (retrieve and trajectories): rate, errors, latency per kind, server memory."""
    from app.bench.load import run_load_bench

    result = run_load_bench(
        _settings(), rate=rate, seconds=seconds, tenants=tenants, agents=agents, concurrency=concurrency,
        api_workers=api_workers, trajectory_share=trajectory_share, repeat_share=repeat_share,
        seed_runs=seed_runs, sample_every_s=sample_every, seed=seed, url=url, api_keys=api_key or [],
        api_pid=api_pid, worker_pid=worker_pid, echo=lambda t: typer.echo(t, err=True),
    )  # fmt: skip
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
    from app.evolver import eval_library, skill_eval
    from app.storage.session import session_scope

    embedder = get_embedder()
    with scratch_database("sfeval-") as factory:
        learnt = eval_library.learn(
            factory, train, embedder=embedder, settings=settings, echo=lambda t: typer.echo(t, err=True)
        )
        with session_scope(factory) as session:
            result = skill_eval.evaluate(
                session, learnt.tenant_id, test, embedder=embedder, settings=settings
            )
    training: dict[str, object] = {"test_runs": len(test), **learnt.as_dict()}
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


@eval_app.command("retrieve", context_settings={"ignore_unknown_options": True})
def eval_retrieve(
    files: Annotated[
        list[str],
        typer.Argument(
            metavar="[--train FILE...] --test FILE...",
            help="JSONL files of API trajectory items: the runs to learn from, then the held-out runs.",
            show_default=False,
        ),
    ],
    static: Annotated[
        bool, typer.Option("--static", help="Only the baseline: one retrieval per run, from the task text.")
    ] = False,
    compare: Annotated[
        bool | None,
        typer.Option(
            "--compare/--no-compare",
            help="Step-conditioned and static side by side (default: yes, unless --static).",
            show_default=False,
        ),
    ] = None,
    leave_task_out: Annotated[
        str | None,
        typer.Option(
            "--leave-task-out",
            metavar="NAME",
            help="Learn without runs whose metadata.task_name is NAME; replay only those.",
        ),
    ] = None,
    top_k: Annotated[int, typer.Option(min=1, max=50, help="Items per answer.")] = 5,
    token_budget: Annotated[int, typer.Option(min=50, max=8000, help="Token budget per answer.")] = 500,
    skills: Annotated[
        bool, typer.Option("--skills/--no-skills", help="Fetch strategy procedures for the skill figures.")
    ] = True,
    url: Annotated[
        str | None, typer.Option("--url", help="Replay against this running service; nothing is learnt.")
    ] = None,
    api_key: Annotated[
        str | None, typer.Option("--api-key", envvar="SKILLFOUNDRY_API_KEY", help="Its agent key (--url).")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print results as JSON.")] = False,
) -> None:
    """Replay --test runs step by step against /v1/retrieve: Hit@1, Hit@5, MRR and avoid rate."""
    from rich.console import Console

    from app.evaluation import retrieve_table, run_retrieve_eval, strategy_lines
    from app.evolver import retrieve_eval
    from app.evolver.retrieve_eval import Ask, Mode, ReplayFailed

    named = _eval_files(files)
    train, test = _trajectory_items(named["train"]), _trajectory_items(named["test"])
    if url is not None and (train or not api_key):
        raise typer.BadParameter("--url replays against a trained service: give --api-key and no --train")
    if leave_task_out is not None:
        train, test = retrieve_eval.leave_task_out(train, test, leave_task_out)
        if url is not None:
            typer.echo("warning: with --url the service's library may have learnt that task", err=True)
    if not test or (url is None and not train):
        raise typer.BadParameter("need held-out runs in --test and, without --url, runs in --train")
    both = compare if compare is not None else not static
    modes = [Mode.STEP, Mode.STATIC] if both else [Mode.STATIC] if static else [Mode.STEP]
    ask = Ask(top_k=top_k, token_budget=token_budget, skills=skills)
    try:
        report, library = run_retrieve_eval(
            _settings(), train, test, modes=modes, ask=ask, url=url, api_key=api_key or "",
            echo=lambda t: typer.echo(t, err=True),
        )  # fmt: skip
    except (ReplayFailed, httpx.HTTPError) as exc:
        typer.echo(f"replay failed: {exc}", err=True)
        raise typer.Exit(1) from exc
    if json_out:
        typer.echo(json.dumps({"library": library, **report.as_dict()}, indent=2))
        return
    console = Console()
    console.print(f"library: {library}", markup=False)
    console.print(retrieve_table(report))
    console.print("strategy skills the runs were given (session pin):", markup=False)
    for line in strategy_lines(report):
        console.print(line, markup=False)
    if report.failed_runs:
        console.print(f"held-out runs that failed, not replayed: {report.failed_runs}")


def _counts(text: str, option: str, least: int) -> tuple[int, ...]:
    """`1,3,10` as numbers of training variations, each given once and none below `least`."""
    try:
        counts = tuple(int(n) for n in text.split(",") if n.strip())
    except ValueError:
        raise typer.BadParameter(f"{option} takes whole numbers, comma-separated: {text!r}") from None
    if any(n < least for n in counts) or len(set(counts)) != len(counts):
        raise typer.BadParameter(f"{option} takes distinct numbers of {least} or more: {text!r}")
    return counts


@eval_app.command("closed-loop", context_settings={"ignore_unknown_options": True})
def eval_closed_loop(
    files: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="[--train FILE...]",
            help="JSONL runs (scripts/scienceworld_trajectories.py) to learn the train-N libraries from.",
            show_default=False,
        ),
    ] = None,
    task: Annotated[str, typer.Option(help="ScienceWorld task types, comma-separated.")] = (
        "find-animal,find-non-living-thing,lifespan-longest-lived"
    ),
    test_variations: Annotated[int, typer.Option(min=1, help="Held-out test variations per task type.")] = 5,
    train_sizes: Annotated[
        str, typer.Option(help="Training variations per task type, comma-separated.")
    ] = "1,3,10",
    max_steps: Annotated[int, typer.Option(min=1, max=200, help="Steps per episode.")] = 25,
    empty: Annotated[bool, typer.Option("--empty/--no-empty", help="Play with an empty library.")] = True,
    online: Annotated[
        bool, typer.Option("--online/--no-online", help="Learn online from its own runs.")
    ] = True,
    online_from: Annotated[
        str,
        typer.Option(
            help="Online runs, comma-separated: each starts from the library of this many training "
            "variations (0: empty).",
        ),
    ] = "0",
    seed: Annotated[int, typer.Option(help="Seeds the exploration policy.")] = 0,
    llm: Annotated[
        bool, typer.Option("--llm", help="An LLM agent (SKILLFOUNDRY_LLM_*) instead of rules.")
    ] = False,
    url: Annotated[str | None, typer.Option("--url", help="Play against this running service.")] = None,
    api_key: Annotated[
        str | None, typer.Option("--api-key", envvar="SKILLFOUNDRY_API_KEY", help="Its agent key (--url).")
    ] = None,
    post: Annotated[
        bool, typer.Option("--post", help="With --url: post each run back as a trajectory.")
    ] = False,
    plot: Annotated[Path | None, typer.Option("--plot", help="Write the learning curves as a PNG.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print results as JSON.")] = False,
) -> None:
    """Agents play held-out ScienceWorld variations with the library's guidance: success rate, mean score."""
    from rich.console import Console

    from app.evaluation_loop import LoopConfig, run_scienceworld, table
    from app.evaluation_loop import plot as draw

    named = _eval_files(files or [])
    if named["test"]:
        raise typer.BadParameter("closed-loop plays ScienceWorld's test split: give no --test files")
    train = _trajectory_items(named["train"])
    sizes = _counts(train_sizes, "--train-sizes", 1)
    starts = _counts(online_from, "--online-from", 0) if online and url is None else ()
    if url is not None and not api_key:
        raise typer.BadParameter("--url needs --api-key")
    if url is None and (sizes or any(starts)) and not train:
        raise typer.BadParameter(
            "the train-N libraries (--train-sizes, --online-from N) need --train files"
            " (or --train-sizes '' --online-from 0)"
        )
    config = LoopConfig(
        task_types=tuple(t.strip() for t in task.split(",") if t.strip()), test_variations=test_variations,
        train_sizes=sizes if url is None else (), max_steps=max_steps, seed=seed,
        empty=empty and url is None, online_from=starts,
    )  # fmt: skip
    report = run_scienceworld(
        _settings(), train, config, llm=llm, url=url, api_key=api_key or "", post=post,
        echo=lambda t: typer.echo(t, err=True),
    )  # fmt: skip
    if plot is not None:
        draw(report, str(plot))
    if json_out:
        typer.echo(json.dumps(report.as_dict(), indent=2))
        return
    Console().print(table(report))


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
