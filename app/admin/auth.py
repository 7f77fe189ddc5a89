"""Admin sessions: sign in with a reviewer or admin API key; a signed cookie; a CSRF token on every form.

The cookie holds the key's id, its tenant, a random session id and when it was issued, signed with
HMAC-SHA256 under the admin secret; never the key itself. Every request reads the key's row again, so
a revoked key (or one that lost its reviewer scope) is signed out on its next click. The CSRF token is
an HMAC of the session id: every POST must carry it, as the form field `csrf` or the `X-CSRF-Token`
header (htmx). The sign-in form has its own token, bound to a short-lived cookie.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request, Response
from sqlalchemy.orm import Session

from app.api.deps import Principal, SessionDep
from app.config import Settings
from app.errors import AppError, Forbidden
from app.storage.models import ApiKey, Scope
from app.storage.repositories import tenants

PATH = "/admin"
COOKIE = "sf_admin"
LOGIN_COOKIE = "sf_admin_login"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
SECRET_FILE = "admin-secret"  # noqa: S105 - a file name
SESSION_MAX_AGE_S = 12 * 3600
LOGIN_MAX_AGE_S = 3600
MIN_SECRET_BYTES = 32
REVIEW_SCOPES = frozenset({Scope.REVIEWER, Scope.ADMIN})

_signer_lock = threading.Lock()


class LoginRequired(Exception):
    """No valid admin session: the browser is sent to the sign-in page (`reason` says why)."""

    def __init__(self, reason: str = "") -> None:
        super().__init__(reason)
        self.reason = reason


class CsrfRejected(AppError):
    status_code = 403
    code = "csrf_failed"
    message = "This form is stale or was not sent by this site; reload the page and try again."


class SignInRefused(AppError):
    status_code = 401
    code = "sign_in_refused"
    message = "This API key is unknown or revoked."


@dataclass(frozen=True)
class Signer:
    """HMAC-SHA256 signatures and tokens under one secret, each bound to a purpose."""

    secret: bytes

    def mac(self, purpose: str, value: str) -> str:
        """A hex token for `value`, valid for `purpose` only."""
        return hmac.new(self.secret, f"{purpose}\x00{value}".encode(), hashlib.sha256).hexdigest()

    def sign(self, purpose: str, data: dict[str, Any]) -> str:
        """`data` as a signed, URL-safe token (readable by whoever holds it: put no secret in it)."""
        payload = _b64(json.dumps(data, separators=(",", ":"), sort_keys=True).encode())
        return f"{payload}.{self.mac(purpose, payload)}"

    def unsign(self, purpose: str, token: str) -> dict[str, Any] | None:
        """The data of a token signed for `purpose`, or None when it is malformed or forged."""
        payload, _, mac = token.partition(".")
        if not payload or not hmac.compare_digest(mac.encode(), self.mac(purpose, payload).encode()):
            return None
        try:
            data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        except (ValueError, binascii.Error):
            return None
        return data if isinstance(data, dict) else None


def load_secret(settings: Settings) -> bytes:
    """The admin secret: `SKILLFOUNDRY_ADMIN_SECRET`, else the one kept in `home`, made on first use."""
    if settings.admin_secret is not None:
        return settings.admin_secret.get_secret_value().encode()
    path = settings.home.resolve() / SECRET_FILE
    try:
        return _read_secret(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first
        return _read_secret(path)
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_urlsafe(48))
    return _read_secret(path)


def _read_secret(path: Path) -> bytes:
    secret = path.read_text().strip().encode()
    if len(secret) < MIN_SECRET_BYTES:
        raise RuntimeError(
            f"{path} holds a secret shorter than {MIN_SECRET_BYTES} bytes; delete it or set one."
        )
    return secret


async def get_signer(request: Request) -> Signer:
    """The app's signer, its secret loaded (or made) on the first admin request."""
    signer: Signer | None = getattr(request.app.state, "admin_signer", None)
    if signer is None:
        with _signer_lock:
            signer = getattr(request.app.state, "admin_signer", None)
            if signer is None:
                signer = Signer(load_secret(request.app.state.settings))
                request.app.state.admin_signer = signer
    return signer


SignerDep = Annotated[Signer, Depends(get_signer)]


@dataclass(frozen=True)
class Admin:
    """A signed-in reviewer or admin: the key as a principal, and the session's CSRF token."""

    principal: Principal
    csrf: str

    @property
    def is_admin(self) -> bool:
        """Whether the key may manage API keys."""
        return Scope.ADMIN in self.principal.scopes


def principal_of(key: ApiKey) -> Principal:
    """A key row as the principal the services audit."""
    return Principal(
        key_id=key.id,
        key_name=key.name,
        tenant_id=key.tenant_id,
        scopes=frozenset(Scope(s) for s in key.scopes),
    )


def current_reviewer(request: Request, session: SessionDep, signer: SignerDep) -> Admin:
    """The signed-in reviewer, the key checked against the database on every request."""
    data = signer.unsign("session", request.cookies.get(COOKIE, ""))
    if data is None:
        raise LoginRequired()
    try:
        key_id, tenant_id, sid, issued = (
            uuid.UUID(data["k"]),
            uuid.UUID(data["t"]),
            str(data["s"]),
            int(data["i"]),
        )
    except (KeyError, ValueError, TypeError):
        raise LoginRequired() from None
    if time.time() - issued > SESSION_MAX_AGE_S:
        raise LoginRequired("expired")
    key = tenants.get_key(session, tenant_id, key_id)
    if key is None or key.revoked_at is not None:
        raise LoginRequired("revoked")
    principal = principal_of(key)
    if not principal.scopes & REVIEW_SCOPES:
        raise LoginRequired("scope")
    tenants.touch_key(key)
    return Admin(principal, csrf=signer.mac("csrf", sid))


async def _sent_token(request: Request) -> str:
    header = request.headers.get(CSRF_HEADER)
    if header:
        return header
    if request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        value = (await request.form()).get(CSRF_FIELD)
        return value if isinstance(value, str) else ""
    return ""


async def checked_reviewer(request: Request, admin: Annotated[Admin, Depends(current_reviewer)]) -> Admin:
    """The signed-in reviewer, for a POST that carries this session's CSRF token."""
    if not hmac.compare_digest((await _sent_token(request)).encode(), admin.csrf.encode()):
        raise CsrfRejected()
    return admin


async def checked_admin(admin: Annotated[Admin, Depends(checked_reviewer)]) -> Admin:
    """A signed-in admin, for a POST that carries this session's CSRF token."""
    if not admin.is_admin:
        raise Forbidden(
            "Only admin keys manage API keys.", detail={"key_scopes": admin.principal.sorted_scopes}
        )
    return admin


async def current_admin(admin: Annotated[Admin, Depends(current_reviewer)]) -> Admin:
    """A signed-in admin."""
    if not admin.is_admin:
        raise Forbidden(
            "Only admin keys manage API keys.", detail={"key_scopes": admin.principal.sorted_scopes}
        )
    return admin


Reviewer = Annotated[Admin, Depends(current_reviewer)]
ReviewerPost = Annotated[Admin, Depends(checked_reviewer)]
AdminOnly = Annotated[Admin, Depends(current_admin)]
AdminPost = Annotated[Admin, Depends(checked_admin)]


# --- signing in and out ------------------------------------------------------------------------


def login_token(request: Request, response: Response, signer: Signer) -> str:
    """The sign-in form's CSRF token, bound to a nonce cookie set on `response` (reused if present)."""
    nonce = request.cookies.get(LOGIN_COOKIE, "")
    if len(nonce) < 16:
        nonce = secrets.token_urlsafe(24)
        _set_cookie(request, response, LOGIN_COOKIE, nonce, LOGIN_MAX_AGE_S)
    return signer.mac("login", nonce)


def check_login_token(request: Request, signer: Signer, sent: str) -> None:
    """Refuse a sign-in whose form token does not match its nonce cookie."""
    nonce = request.cookies.get(LOGIN_COOKIE, "")
    if not nonce or not hmac.compare_digest(sent.encode(), signer.mac("login", nonce).encode()):
        raise CsrfRejected()


def sign_in(session: Session, plaintext: str) -> ApiKey:
    """The reviewer or admin key with this plaintext; agent-only, unknown and revoked keys are refused."""
    key = tenants.key_by_plaintext(session, plaintext.strip()) if plaintext.strip() else None
    if key is None:
        raise SignInRefused()
    if not frozenset(Scope(s) for s in key.scopes) & REVIEW_SCOPES:
        raise SignInRefused(
            "Agent keys cannot sign in; use a reviewer or admin key.",
            status_code=403,
            code="agent_key",
            detail={"key_scopes": sorted(key.scopes)},
        )
    tenants.touch_key(key)
    return key


def start_session(request: Request, response: Response, signer: Signer, key: ApiKey) -> None:
    """Set the signed session cookie for `key` on `response`, and drop the sign-in nonce."""
    token = signer.sign(
        "session",
        {"k": str(key.id), "t": str(key.tenant_id), "s": secrets.token_urlsafe(18), "i": int(time.time())},
    )
    _set_cookie(request, response, COOKIE, token, SESSION_MAX_AGE_S)
    response.delete_cookie(LOGIN_COOKIE, path=PATH)


def end_session(response: Response) -> None:
    """Clear the session cookie."""
    response.delete_cookie(COOKIE, path=PATH, httponly=True, samesite="strict")


def _set_cookie(request: Request, response: Response, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")
