"""Evaluations against the live API: a scratch library served from a background thread, or a deployment.

`skillfoundry eval retrieve` learns a library from training runs in a scratch embedded database (as
`eval skills` does), serves it with uvicorn on a free loopback port in this process (the API shares
the embedder that built the library, so the model loads once), creates an agent key and replays the
held-out runs over HTTP (`app.evolver.retrieve_eval`). With a URL and a key it replays against a
running service instead and learns nothing.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import httpx

from app.config import Settings
from app.evolver.retrieve_eval import Ask, Figures, Mode, Report, replay

if TYPE_CHECKING:
    from rich.table import Table
    from sqlalchemy.orm import Session, sessionmaker

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
REQUEST_TIMEOUT_S = 60.0


def scratch_settings(settings: Settings, factory: sessionmaker[Session]) -> Settings:
    """`settings` for an API over a scratch database: no Redis, no rate limit, every answer whole
    (nothing withheld, so the figures draw no lots)."""
    return settings.model_copy(
        update={
            "database_url": factory.kw["bind"].url.render_as_string(hide_password=False),
            "redis_url": None,
            "rate_limit_per_minute": 0,
            "retrieval_withhold_share": 0.0,
        }
    )


@contextmanager
def serve(settings: Settings) -> Iterator[str]:
    """Serve `create_app(settings)` with uvicorn on 127.0.0.1 until the block ends; its base URL."""
    import uvicorn

    from app.main import create_app

    # Bound here and handed over, so no other process can take the port in between.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), log_level="warning", access_log=False, lifespan="on")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="eval-api", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the evaluation API stopped while starting; see the log above")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the evaluation API did not start within {START_TIMEOUT_S:.0f}s")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(STOP_TIMEOUT_S)
        sock.close()


def client(base_url: str, api_key: str) -> httpx.Client:
    """An HTTP client of the API with the key set."""
    return httpx.Client(
        base_url=base_url.rstrip("/"),
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=REQUEST_TIMEOUT_S,
    )


def run_retrieve_eval(
    settings: Settings,
    train: Sequence[Mapping[str, Any]],
    test: Sequence[Mapping[str, Any]],
    *,
    modes: Sequence[Mode],
    ask: Ask,
    url: str | None = None,
    api_key: str = "",
    echo: Callable[[str], None] = lambda _: None,
) -> tuple[Report, dict[str, object]]:
    """Replay `test` against `url`, or against a scratch library learnt from `train`; the report and
    what the library is (the URL, or what learning it did)."""

    def replay_at(base_url: str, key: str) -> Report:
        with client(base_url, key) as http:
            return replay(http, test, modes=modes, ask=ask, do_min_score=settings.do_min_score, echo=echo)

    if url is not None:
        return replay_at(url, api_key), {"url": url}

    from app.embedded import scratch_database
    from app.embedding import get_embedder
    from app.evolver import eval_library

    with scratch_database("sfeval-") as factory:
        learnt = eval_library.learn(factory, train, embedder=get_embedder(), settings=settings, echo=echo)
        key = eval_library.agent_key(factory, learnt.tenant_id)
        with serve(scratch_settings(settings, factory)) as base_url:
            echo(f"[eval] API up at {base_url}; replaying {len(test)} held-out runs")
            report = replay_at(base_url, key)
    return report, learnt.as_dict()


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def retrieve_table(report: Report) -> Table:
    """A row per task type, then the total; with two modes a cell reads `step / static`."""
    from rich.table import Table

    names = " / ".join("step-conditioned" if m == Mode.STEP else "static" for m in report.modes)
    table = Table(
        title=f"/v1/retrieve on held-out successful runs, top_k {report.top_k}: {names}",
        caption="hit@k, mrr: over the listed `do` experiences in answer order; avoid: a listed `avoid` "
        "fits the gold action; no do: none listed; skill hit: the gold action is a step of the "
        "session's strategy skill",
    )
    columns = ("task type", "runs", "steps", "hit@1", "hit@5", "mrr", "avoid", "no do", "skill hit")
    for column in columns:
        table.add_column(column, justify="left" if column == "task type" else "right")
    metrics: tuple[Callable[[Figures], float | None], ...] = (
        lambda f: f.hits.get(1),
        lambda f: f.hits.get(5),
        lambda f: f.mrr,
        lambda f: f.avoid,
        lambda f: f.no_do,
        lambda f: f.skill_hit,
    )
    rows = report.table()
    for n, (kind, row) in enumerate(rows.items(), 1):
        if n == len(rows):
            table.add_section()
        first = next(iter(row.values()))
        cells = [" / ".join(_cell(metric(f)) for f in row.values()) for metric in metrics]
        table.add_row(kind, str(first.runs), str(first.steps), *cells)
    return table


def strategy_lines(report: Report) -> list[str]:
    """Per task type and mode, which strategy skills the runs were given and how often."""
    lines = []
    for kind in report.task_types:
        given = []
        for mode in report.modes:
            counts = report.strategies(mode, kind).most_common()
            given.append(f"{mode.value}: " + ", ".join(f"{name} x{n}" for name, n in counts))
        lines.append(f"  {kind}: " + "; ".join(given))
    return lines
