"""API keys: format, hashing, scopes, revocation, and the admin key endpoints."""

import re

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.storage.models import ApiKey, AuditLog, Scope
from app.storage.repositories import tenants
from tests.factories import auth, make_key, make_tenant


class TestKeys:
    def test_key_format_and_only_hash_stored(self, db: Session) -> None:
        """Keys are sf_ + 32+ url-safe characters; the row keeps a SHA-256 and a short prefix only."""
        tenant = make_tenant(db)
        row, plaintext = tenants.create_key(db, tenant.id, "k", [Scope.AGENT])
        assert re.fullmatch(r"sf_[A-Za-z0-9_-]{32,}", plaintext)
        assert row.key_hash == tenants.hash_key(plaintext)
        assert plaintext not in (row.key_hash, row.prefix)
        assert plaintext.startswith(row.prefix)
        assert len(row.prefix) < 16

    def test_lookup_ignores_revoked_keys(self, db: Session) -> None:
        """A revoked key no longer resolves."""
        tenant = make_tenant(db)
        row, plaintext = tenants.create_key(db, tenant.id, "k", [Scope.AGENT])
        assert tenants.key_by_plaintext(db, plaintext) is not None
        tenants.revoke_key(row)
        db.flush()
        assert tenants.key_by_plaintext(db, plaintext) is None


class TestAuthentication:
    def test_missing_header_is_401(self, client: TestClient) -> None:
        """No Authorization header: 401 unauthorized in the standard shape."""
        response = client.get("/v1/ping")
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthorized"
        assert set(response.json()["error"]) == {"code", "message", "detail"}

    def test_wrong_scheme_is_401(self, client: TestClient, db: Session) -> None:
        """Only Bearer is accepted."""
        key = make_key(db, make_tenant(db))
        assert client.get("/v1/ping", headers={"Authorization": f"Basic {key}"}).status_code == 401

    def test_unknown_key_is_401(self, client: TestClient) -> None:
        """A well-formed but unknown key is refused."""
        response = client.get("/v1/ping", headers=auth("sf_" + "x" * 43))
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthorized"

    def test_ping_names_tenant_and_scopes(self, client: TestClient, db: Session) -> None:
        """The tenant comes from the key."""
        tenant = make_tenant(db)
        key = make_key(db, tenant, Scope.AGENT, Scope.REVIEWER)
        body = client.get("/v1/ping", headers=auth(key)).json()
        assert body["tenant_id"] == str(tenant.id)
        assert body["scopes"] == ["agent", "reviewer"]

    def test_use_is_recorded(self, client: TestClient, db: Session) -> None:
        """last_used_at is set on use."""
        tenant = make_tenant(db)
        key = make_key(db, tenant)
        client.get("/v1/ping", headers=auth(key))
        row = db.scalars(select(ApiKey).where(ApiKey.key_hash == tenants.hash_key(key))).one()
        assert row.last_used_at is not None


class TestKeyEndpoints:
    def test_agent_key_cannot_manage_keys(self, client: TestClient, db: Session) -> None:
        """Key management needs the admin scope: 403 forbidden otherwise."""
        key = make_key(db, make_tenant(db), Scope.AGENT)
        response = client.post("/v1/keys", json={"name": "x", "scopes": ["agent"]}, headers=auth(key))
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "forbidden"

    def test_reviewer_key_cannot_post_trajectories(self, client: TestClient, db: Session) -> None:
        """Posting agent data needs the agent (or admin) scope."""
        key = make_key(db, make_tenant(db), Scope.REVIEWER)
        response = client.post("/v1/trajectories", json={}, headers=auth(key))
        assert response.status_code == 403

    def test_create_list_revoke_with_audit(self, client: TestClient, db: Session) -> None:
        """An admin creates a key (shown once), lists it without the secret, revokes it; each is audited."""
        tenant = make_tenant(db)
        admin = make_key(db, tenant, Scope.ADMIN)
        created = client.post("/v1/keys", json={"name": "ci", "scopes": ["agent"]}, headers=auth(admin))
        assert created.status_code == 201
        new_key = created.json()["key"]
        assert client.get("/v1/ping", headers=auth(new_key)).status_code == 200

        listed = client.get("/v1/keys", headers=auth(admin)).json()["items"]
        assert {item["name"] for item in listed} == {"test", "ci"}
        assert all("key" not in item for item in listed)

        revoked = client.delete(f"/v1/keys/{created.json()['id']}", headers=auth(admin))
        assert revoked.status_code == 200
        assert revoked.json()["revoked_at"] is not None
        assert client.get("/v1/ping", headers=auth(new_key)).status_code == 401

        actions = db.scalars(select(AuditLog.action).where(AuditLog.tenant_id == tenant.id)).all()
        assert sorted(actions) == ["api_key.create", "api_key.revoke"]

    def test_revoking_another_tenants_key_is_404(self, client: TestClient, db: Session) -> None:
        """Keys of other tenants are invisible."""
        admin = make_key(db, make_tenant(db), Scope.ADMIN)
        other_row, _ = tenants.create_key(db, make_tenant(db).id, "theirs", [Scope.AGENT])
        response = client.delete(f"/v1/keys/{other_row.id}", headers=auth(admin))
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "api_key_not_found"
        assert other_row.revoked_at is None
