"""Import Agent Skills folders: validate, store as a version (scanned by the gate), never trust the upload.

An uploaded SKILL.md is stored exactly as it came, so its hash is the author's and the scanner reads
what agents would be served. A new name makes a skill with provenance `imported` (or `authored`);
a name an imported skill already has gets a new version; a distilled skill's name is refused.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy.orm import Session

from app import skill_md
from app.embedding import Embedder
from app.errors import InvalidSkill, SkillNameTaken
from app.governance.archive import SkillPackage
from app.skills import service
from app.storage.models import Provenance, Skill, SkillEventKind, SkillLevel, SkillVersion
from app.storage.repositories import skills as repo

DISTILLER = "import"
LEVEL_KEY = "level"  # an optional `metadata.level`: strategy, functional or atomic
DOMAIN_KEY = "domain"


@dataclass(frozen=True)
class Imported:
    """What one package became."""

    skill: Skill
    version: SkillVersion
    created: bool  # a new skill
    unchanged: bool  # the same content was stored already; nothing written


def import_package(
    session: Session,
    tenant_id: uuid.UUID,
    package: SkillPackage,
    *,
    actor: str,
    embedder: Embedder,
    provenance: Provenance = Provenance.IMPORTED,
    domain: str | None = None,
) -> Imported:
    """Store one package as a skill version; `InvalidSkill` (422) when its SKILL.md does not validate."""
    doc = _document(package)
    skill = repo.by_name(session, tenant_id, doc.name)
    created = skill is None
    if skill is None:
        skill = repo.add_skill(
            session,
            tenant_id=tenant_id,
            domain=domain if domain is not None else doc.metadata.get(DOMAIN_KEY, ""),
            name=doc.name,
            level=_level(doc),
            source_key=f"import:{doc.name}",
            task_cluster_id=None,
            description=doc.description,
            embedding=embedder.embed_documents([f"{doc.name}: {doc.description}"])[0],
            embedding_model=embedder.model_name,
            provenance=provenance,
        )
    elif skill.provenance == Provenance.DISTILLED:
        raise SkillNameTaken(detail={"name": doc.name, "skill_id": str(skill.id)})
    service.lock(session, skill)
    row = service.write_version(
        session,
        skill,
        doc,
        expected_head=skill.head_version,
        change=SkillEventKind.IMPORTED,
        author=service.Authorship(actor=actor, distiller=DISTILLER),
        evidence=(),
        files=package.files,
        content=package.skill_md,
        reason=f"imported from {package.folder or 'the archive root'}",
    )
    if row is None:
        existing = repo.version(session, skill.id, skill.latest_version)
        if existing is None:  # pragma: no cover - a skill with a head has its versions
            raise InvalidSkill("The skill has no stored version.")
        return Imported(skill, existing, created=False, unchanged=True)
    return Imported(skill, row, created=created, unchanged=False)


def _document(package: SkillPackage) -> skill_md.SkillDocument:
    try:
        doc = skill_md.parse(package.skill_md)
    except skill_md.SkillFormatError as exc:
        raise InvalidSkill(
            f"SKILL.md in '{package.folder or '.'}' cannot be read: {exc}",
            detail={"folder": package.folder, "problems": [str(exc)]},
        ) from exc
    problems = skill_md.validate(doc, files=package.files)
    if problems:
        raise InvalidSkill(
            f"SKILL.md in '{package.folder or '.'}' does not validate: {problems[0]}",
            detail={"folder": package.folder, "problems": problems},
        )
    return doc


def _level(doc: skill_md.SkillDocument) -> SkillLevel:
    value = doc.metadata.get(LEVEL_KEY, "")
    return SkillLevel(value) if value in {level.value for level in SkillLevel} else SkillLevel.FUNCTIONAL
