"""The admin UI's pages and forms over HTTP (no browser): sessions, CSRF, every review action and its audit
entry, error pages and security headers; each test in the rolled-back transaction of the `client` fixture."""

from __future__ import annotations

import re
import uuid

import pytest
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy.orm import Session

from app.admin.auth import COOKIE, Signer, get_signer
from app.skills import service as skill_service
from app.storage.models import Scope, SkillEventKind, SkillStatus, Tenant
from app.storage.repositories import skills as skill_repo
from app.storage.repositories import tenants
from tests.factories import improve_skill, make_key, make_skill, make_tenant, skill_doc, unit_vector

CSRF = re.compile(r'name="csrf" value="([0-9a-f]{64})"')


@pytest.fixture
def admin_client(client: TestClient) -> TestClient:
    """The app with a fixed admin secret (nothing written under SKILLFOUNDRY_HOME)."""
    signer = Signer(b"admin-forms-test-secret-" + b"x" * 16)
    client.app.dependency_overrides[get_signer] = lambda: signer  # type: ignore[attr-defined]
    return client


@pytest.fixture
def tenant(db: Session) -> Tenant:
    return make_tenant(db)


def committed_key(db: Session, tenant: Tenant, scope: Scope, name: str) -> str:
    key = make_key(db, tenant, scope, name=name)
    db.commit()
    return key


def sign_in(client: TestClient, key: str, next_url: str = "/admin") -> Response:
    form = client.get("/admin/login")
    match = CSRF.search(form.text) or re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert match, form.text
    return client.post(
        "/admin/login", data={"key": key, "csrf": match.group(1), "next": next_url}, follow_redirects=False
    )


def token(client: TestClient, url: str = "/admin") -> str:
    match = CSRF.search(client.get(url).text)
    assert match
    return match.group(1)


def act(client: TestClient, url: str, **form: str) -> Response:
    return client.post(url, data={"csrf": token(client), **form}, follow_redirects=False)


def audit_actions(client: TestClient) -> list[str]:
    return re.findall(r'<code class="action">([a-z_.]+)</code>', client.get("/admin/audit").text)


class TestSession:
    def test_sign_in_sets_a_strict_http_only_cookie(
        self, admin_client: TestClient, db: Session, tenant: Tenant
    ) -> None:
        response = sign_in(admin_client, committed_key(db, tenant, Scope.REVIEWER, "alice"), "/admin/review")
        assert response.status_code == 303 and response.headers["location"] == "/admin/review"
        cookie = next(h for h in response.headers.get_list("set-cookie") if h.startswith(f"{COOKIE}="))
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/admin" in cookie
        page = admin_client.get("/admin/review")
        assert page.status_code == 200
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert page.headers["cache-control"] == "no-store"
        assert "admin.signed_in" in audit_actions(admin_client)

    def test_next_never_leaves_the_admin_ui(
        self, admin_client: TestClient, db: Session, tenant: Tenant
    ) -> None:
        key = committed_key(db, tenant, Scope.REVIEWER, "alice")
        for target in ("https://evil.example/", "//evil.example/admin", "/v1/keys"):
            assert sign_in(admin_client, key, target).headers["location"] == "/admin"

    def test_no_session_is_sent_to_sign_in(self, admin_client: TestClient) -> None:
        response = admin_client.get("/admin/skills", follow_redirects=False)
        assert response.status_code == 303
        assert response.headers["location"] == "/admin/login?next=/admin/skills"
        admin_client.cookies.set(COOKIE, "eyJrIjoieCJ9.forged", path="/admin")
        assert admin_client.get("/admin/skills", follow_redirects=False).status_code == 303

    def test_sign_in_form_needs_its_token(
        self, admin_client: TestClient, db: Session, tenant: Tenant
    ) -> None:
        key = committed_key(db, tenant, Scope.REVIEWER, "alice")
        admin_client.get("/admin/login")
        refused = admin_client.post(
            "/admin/login", data={"key": key, "csrf": "0" * 64}, follow_redirects=False
        )
        assert refused.status_code == 403
        assert COOKIE not in admin_client.cookies

    def test_agent_unknown_and_revoked_keys_cannot_sign_in(
        self, admin_client: TestClient, db: Session, tenant: Tenant
    ) -> None:
        agent = sign_in(admin_client, committed_key(db, tenant, Scope.AGENT, "bot"))
        assert agent.status_code == 403 and "Agent keys cannot sign in" in agent.text
        assert sign_in(admin_client, "sf_" + "x" * 43).status_code == 401
        assert COOKIE not in admin_client.cookies

    def test_revoking_the_key_signs_the_session_out(
        self, admin_client: TestClient, db: Session, tenant: Tenant
    ) -> None:
        key = committed_key(db, tenant, Scope.REVIEWER, "alice")
        sign_in(admin_client, key)
        row = tenants.key_by_plaintext(db, key)
        assert row is not None
        tenants.revoke_key(row)
        db.commit()
        response = admin_client.get("/admin/review", follow_redirects=False)
        assert response.headers["location"] == "/admin/login?next=/admin/review&reason=revoked"
        assert "revoked" in admin_client.get(response.headers["location"]).text

    def test_sign_out(self, admin_client: TestClient, db: Session, tenant: Tenant) -> None:
        sign_in(admin_client, committed_key(db, tenant, Scope.REVIEWER, "alice"))
        assert act(admin_client, "/admin/logout").headers["location"] == "/admin/login?reason=signed_out"
        assert admin_client.get("/admin", follow_redirects=False).status_code == 303


class TestActions:
    def test_every_action_redirects_to_the_skill_and_is_audited(
        self, admin_client: TestClient, db: Session, tenant: Tenant
    ) -> None:
        """accept + publish, roll back, reject, withdraw, publish again: each lands in the audit log."""
        skill = make_skill(db, tenant)
        improve_skill(db, skill)  # v2, unreviewed: the head follows it
        sign_in(admin_client, committed_key(db, tenant, Scope.REVIEWER, "alice"))
        base = f"/admin/skills/{skill.id}"

        steps = [
            (f"{base}/versions/1/accept", {"reason": "good", "publish": "1"}, "v=1&done=accepted",
             "skill.published"),
            (f"{base}/rollback", {"reason": "try v2", "to_version": "2", "expected_head": "1"},
             "v=2&done=rolled_back", "skill.rolled_back"),
            (f"{base}/versions/2/reject", {"reason": "worse"}, "v=2&done=rejected", "skill.rejected"),
            (f"{base}/withdraw", {"reason": "pause"}, "v=1&done=withdrawn", "skill.withdrawn"),
            (f"{base}/versions/1/publish", {"reason": "back"}, "v=1&done=published", "skill.published"),
        ]  # fmt: skip
        for url, form, location, action in steps:
            response = act(admin_client, url, **form)
            assert response.status_code == 303, response.text
            assert response.headers["location"] == f"{base}?{location}"
            assert audit_actions(admin_client)[0] == action
        assert "skill.accepted" in audit_actions(admin_client)
        db.refresh(skill)
        assert (skill.head_version, skill.status) == (1, SkillStatus.ACTIVE)
        page = admin_client.get(f"{base}?v=1&done=published")
        assert "Published: agents now get this version." in page.text

    def test_diff_of_two_versions_is_side_by_side(
        self, admin_client: TestClient, db: Session, tenant: Tenant
    ) -> None:
        skill = make_skill(db, tenant)
        improve_skill(db, skill, steps=("fill pot with <water>", "activate stove"))
        sign_in(admin_client, committed_key(db, tenant, Scope.REVIEWER, "alice"))
        page = admin_client.get(f"/admin/skills/{skill.id}?a=1&b=2").text
        assert "v1 → v2" in page and '<table class="diff" hx-disable>' in page
        assert 'class="replace"' in page or 'class="insert"' in page
        assert "fill pot with &lt;water&gt;" in page

    def test_refusals_are_pages_with_the_reason(
        self, admin_client: TestClient, db: Session, tenant: Tenant
    ) -> None:
        key = committed_key(db, tenant, Scope.REVIEWER, "alice")
        row = tenants.key_by_plaintext(db, key)
        assert row is not None
        skill = skill_repo.add_skill(
            db, tenant_id=tenant.id, domain="kitchen", name="mine", level=skill_repo.SkillLevel.ATOMIC,
            source_key="test:mine", task_cluster_id=None, description="d", embedding=unit_vector(1.0),
            embedding_model="test-model",
        )  # fmt: skip
        author = skill_service.Authorship(actor=f"key:alice:{row.id}", distiller="manual")
        skill_service.write_version(
            db,
            skill,
            skill_doc("mine"),
            expected_head=0,
            change=SkillEventKind.CREATED,
            author=author,
            evidence=(),
        )
        db.commit()
        sign_in(admin_client, key)
        own = act(admin_client, f"/admin/skills/{skill.id}/versions/1/accept", reason="mine")
        assert own.status_code == 403 and "self" in own.text.lower()
        assert "script-src 'self'" in own.headers["content-security-policy"]
        empty = act(admin_client, f"/admin/skills/{skill.id}/versions/1/reject", reason="")
        assert empty.status_code == 422 and "reason" in empty.text
        missing = admin_client.get(f"/admin/skills/{uuid.uuid4()}")
        assert missing.status_code == 404 and 'href="/admin/skills/' in missing.text
        no_token = admin_client.post(f"/admin/skills/{skill.id}/withdraw", data={"reason": "x"})
        assert no_token.status_code == 403
        db.refresh(skill)
        assert skill.status == SkillStatus.ACTIVE

    def test_keys_are_for_admins(self, admin_client: TestClient, db: Session, tenant: Tenant) -> None:
        sign_in(admin_client, committed_key(db, tenant, Scope.REVIEWER, "alice"))
        assert admin_client.get("/admin/keys").status_code == 403
        assert act(admin_client, "/admin/keys", name="x", scope="admin").status_code == 403
        assert "/admin/keys" not in admin_client.get("/admin").text


class TestPages:
    def test_every_page_renders_on_an_empty_tenant_and_with_junk_filters(
        self, admin_client: TestClient, db: Session, tenant: Tenant
    ) -> None:
        sign_in(admin_client, committed_key(db, tenant, Scope.ADMIN, "root"))
        for url in (
            "/admin",
            "/admin/review?kind=bogus&risk=bogus&level=bogus&name=%3Cscript%3E",
            "/admin/skills?level=x&status=y",
            "/admin/experiences?q=%3Cscript%3E&polarity=x",
            "/admin/trajectories?outcome=x&agent_id=%3Cb%3E",
            "/admin/audit?action=skill.",
            "/admin/keys",
        ):
            response = admin_client.get(url)
            assert response.status_code == 200, (url, response.text[:500])
            assert "<script>" not in response.text.replace(
                '<script src="/admin/static/htmx.min.js" defer>', ""
            )
        assert "No retrieve call" not in admin_client.get("/admin").text
        assert "No <code>/v1/retrieve</code> call in the last 48 hours" in admin_client.get("/admin").text

    def test_static_files_are_an_allowlist(self, admin_client: TestClient) -> None:
        htmx = admin_client.get("/admin/static/htmx.min.js")
        assert htmx.status_code == 200 and htmx.headers["content-type"].startswith("text/javascript")
        assert admin_client.get("/admin/static/admin.css").headers["content-type"].startswith("text/css")
        assert admin_client.get("/admin/static/htmx.LICENSE").status_code == 404
        assert admin_client.get("/admin/static/..%2Fauth.py").status_code == 404
