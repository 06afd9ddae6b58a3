"""Validation of job payloads at enqueue time.

A payload is rejected as a whole with a message naming the field and the rule; nothing of a
rejected payload is ever stored.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from supervisor.queue.redaction import DEFAULT_SECRET_KEYS, TOO_DEEP, SecretKeys, secret_values
from supervisor.queue.walk import MAX_DEPTH, OBJECTS, dotted, top_field, walk

DEPTH_RULE = f"must be nested at most {MAX_DEPTH} levels deep"
JOB_ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
TENANT_ID_RE = re.compile(r"^[A-Za-z0-9_.:@-]{1,128}$")
DATA_SOURCE_TYPES = ("text", "file", "url", "crawl")
PRIORITIES = ("high", "normal")
MAX_PAYLOAD_BYTES = 256 * 1024
MAX_TIMEOUT_S = 7 * 24 * 3600
MAX_ATTEMPTS_LIMIT = 100
MAX_TRIAL_TOKEN_CHARS = 4096
# Distinct values under secret-named keys, and credentials in its URLs (as written and
# decoded, see url_secret_values), a payload may hold: each is scrubbed, in every form
# `_forms` knows, from every progress line, error and result string of its job.
MAX_SECRET_VALUES = 300
_KNOWN_FIELDS = frozenset(
    {
        "job_id",
        "tenant_id",
        "data_source",
        "priority",
        "metadata",
        "timeout_s",
        "max_attempts",
        "trial_token",
    }
)
_SURROGATES = re.compile("[\ud800-\udfff]")


class PayloadError(ValueError):
    """A payload broke a rule. `field` names the offending field (dotted path)."""

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule


class TenantConflict(PayloadError):
    """A job with this id exists and belongs to another tenant; nothing was stored."""

    def __init__(self, job_id: str) -> None:
        super().__init__("job_id", f"{job_id!r} is taken by another tenant's job")
        self.job_id = job_id


def validate_job_id(job_id: object) -> str:
    if not isinstance(job_id, str) or not job_id:
        raise PayloadError("job_id", "must be a non-empty string")
    if not JOB_ID_RE.fullmatch(job_id):
        raise PayloadError(
            "job_id", "must be 1-128 characters of letters, digits, '_', '.', ':' or '-'"
        )
    if not job_id.strip("."):
        # "." and ".." vanish from URLs (/jobs/.. is /): such an id could not be addressed.
        raise PayloadError("job_id", "must not be made of dots only")
    return job_id


def validate_payload(
    raw: object,
    secret_keys: Iterable[str] | SecretKeys = DEFAULT_SECRET_KEYS,
    *,
    secrets: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Return a normalised copy of a valid payload or raise PayloadError. `secret_keys`:
    the names whose values count as secrets (see MAX_SECRET_VALUES); `secrets`: the
    payload's `secret_values` under them, when the caller has them already."""
    if not isinstance(raw, Mapping):
        raise PayloadError("payload", "must be a JSON object")
    if not all(isinstance(k, str) for k in raw):
        raise PayloadError("payload", "keys must be strings")
    unknown = sorted(set(raw) - _KNOWN_FIELDS)
    if unknown:
        raise PayloadError(unknown[0], "is not a known field")
    job_id = validate_job_id(raw.get("job_id"))
    tenant = raw.get("tenant_id")
    if not isinstance(tenant, str) or not tenant:
        raise PayloadError("tenant_id", "is required and must be a non-empty string")
    if not TENANT_ID_RE.fullmatch(tenant):
        raise PayloadError("tenant_id", "must be 1-128 characters of letters, digits, '_.:@-'")
    source = raw.get("data_source")
    if not isinstance(source, Mapping):
        raise PayloadError("data_source", "is required and must be an object with a 'type'")
    source_type = source.get("type")
    if source_type not in DATA_SOURCE_TYPES:
        raise PayloadError("data_source.type", f"must be one of {', '.join(DATA_SOURCE_TYPES)}")
    priority = raw.get("priority", "normal")
    if priority not in PRIORITIES:
        raise PayloadError("priority", "must be 'high' or 'normal'")
    metadata = raw.get("metadata")
    if metadata is not None and not isinstance(metadata, Mapping):
        raise PayloadError("metadata", "must be an object")
    check_structure(raw)
    if secrets is None:
        secrets = secret_values(raw, secret_keys)
    if len(set(secrets)) > MAX_SECRET_VALUES:
        raise PayloadError(
            "payload",
            f"must hold at most {MAX_SECRET_VALUES} values under secret-named keys"
            " or credentials in URLs",
        )
    out: dict[str, Any] = {
        "job_id": job_id,
        "tenant_id": tenant,
        "data_source": dict(source),
        "priority": priority,
    }
    if metadata is not None:
        out["metadata"] = dict(metadata)
    timeout_s = raw.get("timeout_s")
    if timeout_s is not None:
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float):
            raise PayloadError("timeout_s", "must be a number of seconds")
        if not 0 < timeout_s <= MAX_TIMEOUT_S:
            raise PayloadError("timeout_s", f"must be > 0 and <= {MAX_TIMEOUT_S}")
        out["timeout_s"] = timeout_s
    max_attempts = raw.get("max_attempts")
    if max_attempts is not None:
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int):
            raise PayloadError("max_attempts", "must be an integer")
        if not 1 <= max_attempts <= MAX_ATTEMPTS_LIMIT:
            raise PayloadError("max_attempts", f"must be between 1 and {MAX_ATTEMPTS_LIMIT}")
        out["max_attempts"] = max_attempts
    trial_token = raw.get("trial_token")
    if trial_token is not None:
        if not isinstance(trial_token, str) or not 1 <= len(trial_token) <= MAX_TRIAL_TOKEN_CHARS:
            raise PayloadError(
                "trial_token", f"must be a string of 1-{MAX_TRIAL_TOKEN_CHARS} characters"
            )
        out["trial_token"] = trial_token
    try:
        encoded = json.dumps(out, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise PayloadError("payload", f"must be JSON-serialisable ({exc})") from None
    if len(encoded.encode()) > MAX_PAYLOAD_BYTES:
        raise PayloadError("payload", f"must be at most {MAX_PAYLOAD_BYTES} bytes as JSON")
    return out


def check_structure(value: Any) -> None:
    """Refuse nesting deeper than MAX_DEPTH, keys that are not strings, and strings that
    are not valid Unicode (lone surrogates, which no UTF-8 encoder accepts), naming the
    first offending field."""
    for place, node, depth in walk(value):
        if depth > MAX_DEPTH:
            raise PayloadError(top_field(place) or "payload", DEPTH_RULE)
        if isinstance(node, str):
            if _SURROGATES.search(node):
                raise PayloadError(
                    dotted(place) or "payload", "must be valid Unicode (a lone surrogate)"
                )
        elif isinstance(node, OBJECTS):
            for k in node:
                if not isinstance(k, str):  # JSON would make it one, beside a key it may repeat
                    raise PayloadError(dotted(place) or "payload", "keys must be strings")
                if _SURROGATES.search(k):
                    raise PayloadError(dotted(place) or "payload", "keys must be valid Unicode")


def strict_json(value: Any) -> bytes:
    """`value` as compact JSON in UTF-8 that any strict reader takes (PostgreSQL's jsonb,
    a UTF-8 encoder): ValueError for NaN, Infinity or a lone surrogate. Text other than
    ASCII stays itself, not a six-byte escape per character (escaped again where the JSON
    is stored inside other JSON)."""
    return json.dumps(value, allow_nan=False, ensure_ascii=False, separators=(",", ":")).encode()


def replace_surrogates(value: Any, max_depth: int = MAX_DEPTH) -> Any:
    """`value` with every lone surrogate in its strings and keys replaced by U+FFFD, so a
    record stored before validation refused them can still be encoded as UTF-8."""

    def fix(text: str) -> str:
        return _SURROGATES.sub("\ufffd", text)

    def walk(node: Any, depth: int) -> Any:
        if isinstance(node, str):
            return fix(node)
        if isinstance(node, Mapping | list | tuple) and depth >= max_depth:
            return TOO_DEEP
        if isinstance(node, Mapping):
            return {fix(str(k)): walk(v, depth + 1) for k, v in node.items()}
        if isinstance(node, list | tuple):
            return [walk(v, depth + 1) for v in node]
        return node

    return walk(value, 0)
