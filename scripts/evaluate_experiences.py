"""Distill ScienceWorld training trajectories into experiences and check them on held-out variations.

For every step of each held-out (gold) trajectory: normalise and embed the observation, find the
nearest state cluster in pgvector, and ask whether the gold action fits one of that cluster's
`do` experiences (a `<task:object>` slot may take words of the held-out task; an `<other:object>`
slot any words). Hits through a category slot (`<task:animal>`: any object phrase, if the held-out
task names the category) are counted apart from exact ones: such a lesson tells the move, while
the agent must still recognise which object is the animal. Also lists the `avoid` experiences
learnt from failures and the generalised (category-slot) experiences.

    .venv/bin/python scripts/evaluate_experiences.py --train /tmp/sw_train.jsonl --test /tmp/sw_test.jsonl
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from sqlalchemy import select

from app.config import get_settings
from app.embedded import scratch_database
from app.embedding import get_embedder
from app.evolver import pipeline
from app.evolver.consolidate import consolidate
from app.evolver.generalise import category_of, examples_of
from app.evolver.normalize import normalize_observation
from app.ingestion import service as ingestion
from app.storage.models import Experience, ExperienceStatus, Polarity
from app.storage.repositories import distillation, tenants
from app.storage.session import session_scope

EXACT = "exact"
CATEGORY = "category"
_CATEGORY_SLOT = re.compile(r"<task:([a-z0-9][a-z0-9-]*)>")


def fits(template: str, action: str, task: str) -> str | None:
    """How `action` instantiates `template` for an agent whose task is `task`: EXACT, CATEGORY or None."""
    task_words = set(re.findall(r"[a-z0-9]+", task.lower()))
    pattern = ""
    categories: list[str] = []
    for n, word in enumerate(template.split()):
        category = _CATEGORY_SLOT.fullmatch(word)
        if word == "<task:object>":
            pattern += rf"\s*(?P<t{n}>.+?)"
        elif category is not None:
            categories.append(category.group(1))
            pattern += r"\s*.+?"
        elif word == "<other:object>":
            pattern += r"\s*.+?"
        else:
            pattern += r"\s*" + re.escape(word)
    match = re.fullmatch(pattern.strip() + r"\s*", action.lower().strip())
    if match is None:
        return None
    if not all(set(re.findall(r"[a-z0-9]+", v)) <= task_words for v in match.groupdict().values()):
        return None
    if not categories:
        return EXACT
    # The agent can fill "the animal your task asks for" only if its task asks for an animal.
    return CATEGORY if set(categories) <= task_words else None


def best_fit(templates: list[str], action: str, task: str) -> str | None:
    """EXACT if some template fits exactly, else CATEGORY if one fits through a category slot."""
    kinds = {fits(t, action, task) for t in templates}
    return EXACT if EXACT in kinds else CATEGORY if CATEGORY in kinds else None


def load(path: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--train", required=True)
    parser.add_argument("--test", required=True)
    parser.add_argument("--json", dest="json_out", help="Also write the results to this file.")
    parser.add_argument(
        "--no-generalise", action="store_true", help="Consolidate without category slots (the baseline)."
    )
    args = parser.parse_args()

    settings = get_settings()
    if args.no_generalise:
        settings = settings.model_copy(update={"generalise_experiences": False})
    embedder = get_embedder()
    with scratch_database("sfeval-") as factory:
        with session_scope(factory) as session:
            tenant_id = tenants.create_tenant(session, "eval").id
        for body in load(args.train):  # one event per trajectory, in arrival order
            with session_scope(factory) as session:
                event_id = ingestion.accept(session, tenant_id, [body], schedule=False).event_id
            with session_scope(factory) as session:
                pipeline.process_ingest(session, event_id, embedder=embedder, settings=settings)

        with session_scope(factory) as session:  # what the periodic consolidation would do next
            consolidated = consolidate(session, tenant_id, settings, embedder=embedder)
        print(f"consolidation: {consolidated}")
        with session_scope(factory) as session:
            rows = session.scalars(
                select(Experience)
                .where(Experience.tenant_id == tenant_id, Experience.status == ExperienceStatus.ACTIVE)
                .order_by(Experience.polarity, (Experience.successes + Experience.failures).desc())
            ).all()
            experiences = [
                {"polarity": r.polarity.value, "template": r.action_template, "example": r.action_example,
                 "reason": r.reason, "support": [r.successes, r.failures, r.distinct_agents], "text": r.text,
                 "cluster_id": str(r.cluster_id), "category": category_of(r.action_template),
                 "examples": list(examples_of(r.slots))}
                for r in rows
            ]  # fmt: skip
            do_by_cluster: dict[str, list[str]] = {}
            for e in experiences:
                if e["polarity"] == Polarity.DO.value:
                    do_by_cluster.setdefault(e["cluster_id"], []).append(e["template"])

            checks = []
            for body in load(args.test):
                for step in body["steps"]:
                    vector = embedder.embed_query(normalize_observation(step["observation"]))
                    nearest = distillation.nearest_cluster(
                        session, tenant_id, body.get("domain") or "", vector
                    )
                    cluster = str(nearest[0].id) if nearest else None
                    templates = do_by_cluster.get(cluster or "", [])
                    checks.append(
                        {"variation": body["metadata"].get("variation"), "gold": step["action"],
                         "similarity": round(nearest[1], 3) if nearest else None,
                         "hit": best_fit(templates, step["action"], body["task"]),
                         "do_templates": templates[:6]}
                    )  # fmt: skip

    exact = sum(c["hit"] == EXACT for c in checks)
    through_category = sum(c["hit"] == CATEGORY for c in checks)
    print(f"experiences: {sum(e['polarity'] == 'do' for e in experiences)} do, "
          f"{sum(e['polarity'] == 'avoid' for e in experiences)} avoid")  # fmt: skip
    for e in experiences:
        line = f"  [{e['polarity']:<5}] {e['template']:<45} e.g. {e['example']:<35} {e['reason']:<22}"
        print(f"{line} {e['support']}")
    general = [e for e in experiences if e["category"]]
    print(f"\ngeneralised experiences (category slots): {len(general)}")
    for e in general:
        print(f"  {e['template']}  examples={e['examples']}  support={e['support']}\n    {e['text']}")
    print(
        f"\nheld-out steps whose gold action fits a `do` of the nearest cluster: "
        f"{exact + through_category}/{len(checks)}\n"
        f"  exact template hits (literal or <task:object>): {exact}\n"
        f"  hits through a category slot only: {through_category}"
    )
    label = {EXACT: "HIT ", CATEGORY: "CAT ", None: "miss"}
    for c in checks:
        print(f"  v{c['variation']} {label[c['hit']]} sim={c['similarity']} gold={c['gold']!r}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"experiences": experiences, "checks": checks}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
