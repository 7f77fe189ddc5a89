"""Input limits, enforced by the wire schemas and the body-size middleware and listed in the API docs."""

MAX_REQUEST_BYTES = 10 * 1024 * 1024
MAX_BATCH_TRAJECTORIES = 500
MAX_STEPS_PER_TRAJECTORY = 2000
MAX_FIELD_CHARS = 64 * 1024
MAX_ID_CHARS = 256
MAX_TAG_CHARS = 128
MAX_METADATA_KEYS = 64
MAX_USED_ITEMS = 100
MAX_PAGE_SIZE = 200
DEFAULT_PAGE_SIZE = 50

DESCRIPTION = f"""
Limits (a request over one gets 413 with a code naming it, or 429 for the rate):

| what | limit | error code |
|---|---|---|
| request body | {MAX_REQUEST_BYTES // (1024 * 1024)} MB | `payload_too_large` |
| trajectories per POST | {MAX_BATCH_TRAJECTORIES} | `too_many_trajectories` |
| steps per trajectory | {MAX_STEPS_PER_TRAJECTORY} | `too_many_steps` |
| any text field (task, observation, action, tool output, error; JSON serialised) | {MAX_FIELD_CHARS} characters | `field_too_long` |
| agent_id, session_id, tool, metadata keys | {MAX_ID_CHARS} characters | `field_too_long` |
| domain | {MAX_TAG_CHARS} characters | `field_too_long` |
| metadata entries | {MAX_METADATA_KEYS} | `too_many_items` |
| used_item_ids per step | {MAX_USED_ITEMS} | `too_many_items` |
| page size (`limit`) | {MAX_PAGE_SIZE} | `validation_error` (422) |
| requests per API key | `SKILLFOUNDRY_RATE_LIMIT_PER_MINUTE` (default 6000) per minute | `rate_limited` (429) |
| requests inside one API process at once | `SKILLFOUNDRY_API_THREADS` (16); the rest wait up to 10 s | `overloaded` (503) |
| skill import (`POST /v1/skills`): upload, unpacked total, one file, files per skill, skills | 10 MB, 8 MB, 1 MB, 400, 100 | `archive_too_large`, `zip_bomb`, `file_too_large` (413), `too_many_files`, `too_many_skills` (422) |
| review and rollback reasons | 2000 / 1000 characters | `field_too_long` |

Text may not contain U+0000 (`nul_in_text`, 422), JSON numbers must be finite (`non_finite_number`, 422),
and request fields take JSON's own types (no `0` for `false`).
"""
