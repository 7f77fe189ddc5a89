"""Typed errors that carry their HTTP status and a stable code; rendered by one handler."""

from __future__ import annotations

from typing import Any


class AppError(Exception):
    """Base of every error a client may see."""

    status_code: int = 400
    code: str = "bad_request"
    message: str = "The request could not be processed."

    def __init__(
        self,
        message: str | None = None,
        *,
        detail: Any = None,
        headers: dict[str, str] | None = None,
        code: str | None = None,
        status_code: int | None = None,
    ):
        self.message = message or self.message
        self.code = code or self.code
        self.status_code = status_code or self.status_code
        self.detail = detail
        self.headers = headers or {}
        super().__init__(self.message)


class BadRequest(AppError):
    status_code = 400
    code = "bad_request"


class InvalidJson(AppError):
    status_code = 400
    code = "invalid_json"
    message = "The request body is not valid JSON."


class InvalidCursor(AppError):
    status_code = 400
    code = "invalid_cursor"
    message = "The pagination cursor is malformed; pass back the `next_cursor` of a previous page."


class Unauthorized(AppError):
    status_code = 401
    code = "unauthorized"
    message = "Send a valid API key as `Authorization: Bearer sf_...`."


class Forbidden(AppError):
    status_code = 403
    code = "forbidden"
    message = "This API key lacks the scope this action needs."


class NotFound(AppError):
    status_code = 404
    code = "not_found"
    message = "No such resource."


class TrajectoryNotFound(NotFound):
    code = "trajectory_not_found"
    message = "No trajectory with this id is visible to this API key."


class EventNotFound(NotFound):
    code = "event_not_found"
    message = "No event with this id is visible to this API key."


class ExperienceNotFound(NotFound):
    code = "experience_not_found"
    message = "No experience with this id is visible to this API key."


class SkillNotFound(NotFound):
    code = "skill_not_found"
    message = "No skill with this id is visible to this API key."


class SkillVersionNotFound(NotFound):
    code = "skill_version_not_found"
    message = "This skill has no such version; list them with GET /v1/skills/{id}/versions."


class ApiKeyNotFound(NotFound):
    code = "api_key_not_found"
    message = "No API key with this id in this tenant."


class MethodNotAllowed(AppError):
    status_code = 405
    code = "method_not_allowed"
    message = "This path does not accept this HTTP method."


class Conflict(AppError):
    status_code = 409
    code = "conflict"


class IdempotencyKeyReused(Conflict):
    code = "idempotency_key_reused"
    message = "This Idempotency-Key was already used with a different request body; use a new key."


class VersionConflict(Conflict):
    code = "version_conflict"
    message = "The skill's head moved since you read it; read it again and retry against the new head."


class TenantExists(Conflict):
    code = "tenant_exists"
    message = "A tenant with this name already exists."


class PayloadTooLarge(AppError):
    status_code = 413
    code = "payload_too_large"
    message = "The request body is too large."


class LimitExceeded(PayloadTooLarge):
    """Over a documented limit; `code` names which (`too_many_steps`, `field_too_long`, ...)."""

    code = "limit_exceeded"


class ValidationFailed(AppError):
    status_code = 422
    code = "validation_error"
    message = "The request does not match the schema; see `detail` for each problem."


class InvalidSkill(ValidationFailed):
    code = "invalid_skill"
    message = "The SKILL.md does not pass validation."


class RateLimited(AppError):
    status_code = 429
    code = "rate_limited"
    message = "Too many requests for this API key; retry after the number of seconds in Retry-After."


class ServiceUnavailable(AppError):
    status_code = 503
    code = "service_unavailable"
    message = "A backing service is unavailable; retry shortly."


class DatabaseBusy(ServiceUnavailable):
    code = "database_busy"
    message = "Every database connection of this API process is busy; retry after the seconds in Retry-After."


class DatabaseUnavailable(ServiceUnavailable):
    code = "database_unavailable"
    message = "The database is unreachable; retry shortly."


# Retrieval feedback (issue 5).


class RetrievalNotFound(NotFound):
    code = "retrieval_not_found"
    message = (
        "No retrieval with this id is visible to this API key. A retrieval is recorded just after its "
        "answer is sent, so feedback sent at once may arrive first: retry in a moment."
    )


class FeedbackExists(Conflict):
    code = "feedback_exists"
    message = "This retrieval already has an outcome; feedback is given once per retrieval."


class ItemNotInRetrieval(ValidationFailed):
    code = "item_not_in_retrieval"
    message = "Some `used_item_ids` were not listed by this retrieval; only listed items can be used."


# Skill import: zips, uploaded files, folders.


class InvalidArchive(AppError):
    """A skill package refused on import; `code` says why (`unsafe_path`, `zip_bomb`, ...)."""

    status_code = 422
    code = "invalid_archive"
    message = "The skill package could not be read."


# Governance: trust tiers, review, waivers.


class TierWithholdsBody(Forbidden):
    code = "tier_withholds_body"
    message = (
        "This version is not reviewed: agents get only a skill's name and description until a reviewer "
        "accepts it (T2 or higher)."
    )


class SelfApproval(Forbidden):
    code = "self_approval"
    message = "Nobody approves a version they authored; ask another reviewer."


class ReviewConflict(Conflict):
    """The version's review state does not allow this action; `message` says which state it is in."""

    code = "review_state_conflict"
    message = "The version's review state does not allow this action."


class RiskTooHigh(Conflict):
    code = "risk_too_high"
    message = (
        "The scanner rates this version's risk high or critical: mark findings that are false positives "
        "(POST .../false-positives), or reject the version."
    )


class FindingNotFound(NotFound):
    code = "finding_not_found"
    message = "The version's latest scan has no finding of this rule; GET .../scan lists its findings."


class SkillNameTaken(Conflict):
    code = "skill_name_taken"
    message = (
        "A skill with this name was distilled by the evolver; an import can only add versions to an "
        "imported or authored skill. Rename the skill in its SKILL.md."
    )
