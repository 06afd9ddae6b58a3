"""Validation of job payloads at enqueue time, and removal of secrets before anything is logged.

A payload is rejected as a whole with a message naming the field and the rule; nothing of a
rejected payload is ever stored.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

JOB_ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
TENANT_ID_RE = re.compile(r"^[A-Za-z0-9_.:@-]{1,128}$")
DATA_SOURCE_TYPES = ("text", "file", "url", "crawl")
PRIORITIES = ("high", "normal")
MAX_PAYLOAD_BYTES = 256 * 1024
MAX_TIMEOUT_S = 7 * 24 * 3600
MAX_ATTEMPTS_LIMIT = 100
DEFAULT_SECRET_KEYS: frozenset[str] = frozenset(
    {"trial_token", "token", "api_key", "apikey", "password", "secret", "authorization"}
)
REDACTED = "[redacted]"
_KNOWN_FIELDS = frozenset(
    {"job_id", "tenant_id", "data_source", "priority", "metadata", "timeout_s", "max_attempts"}
)


class PayloadError(ValueError):
    """A payload broke a rule. `field` names the offending field (dotted path)."""

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule


def validate_job_id(job_id: object) -> str:
    if not isinstance(job_id, str) or not job_id:
        raise PayloadError("job_id", "must be a non-empty string")
    if not JOB_ID_RE.match(job_id):
        raise PayloadError(
            "job_id", "must be 1-128 characters of letters, digits, '_', '.', ':' or '-'"
        )
    return job_id


def validate_payload(raw: object) -> dict[str, Any]:
    """Return a normalised copy of a valid payload or raise PayloadError."""
    if not isinstance(raw, Mapping):
        raise PayloadError("payload", "must be a JSON object")
    unknown = sorted(set(raw) - _KNOWN_FIELDS)
    if unknown:
        raise PayloadError(unknown[0], "is not a known field")
    job_id = validate_job_id(raw.get("job_id"))
    tenant = raw.get("tenant_id")
    if not isinstance(tenant, str) or not tenant:
        raise PayloadError("tenant_id", "is required and must be a non-empty string")
    if not TENANT_ID_RE.match(tenant):
        raise PayloadError("tenant_id", "must be 1-128 characters of letters, digits, '_.:@-'")
    source = raw.get("data_source")
    if not isinstance(source, Mapping):
        raise PayloadError("data_source", "is required and must be an object with a 'type'")
    source_type = source.get("type")
    if source_type not in DATA_SOURCE_TYPES:
        raise PayloadError(
            "data_source.type", f"must be one of {', '.join(DATA_SOURCE_TYPES)}"
        )
    priority = raw.get("priority", "normal")
    if priority not in PRIORITIES:
        raise PayloadError("priority", "must be 'high' or 'normal'")
    metadata = raw.get("metadata")
    if metadata is not None and not isinstance(metadata, Mapping):
        raise PayloadError("metadata", "must be an object")
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
    try:
        encoded = json.dumps(out, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise PayloadError("payload", f"must be JSON-serialisable ({exc})") from None
    if len(encoded.encode()) > MAX_PAYLOAD_BYTES:
        raise PayloadError("payload", f"must be at most {MAX_PAYLOAD_BYTES} bytes as JSON")
    return out


def redact(value: Any, secret_keys: Iterable[str] = DEFAULT_SECRET_KEYS) -> Any:
    """A deep copy of `value` with every secret-named key's value replaced."""
    keys = frozenset(k.lower() for k in secret_keys)

    def walk(node: Any) -> Any:
        if isinstance(node, Mapping):
            return {
                k: (REDACTED if str(k).lower() in keys else walk(v)) for k, v in node.items()
            }
        if isinstance(node, list | tuple):
            return [walk(v) for v in node]
        return node

    return walk(value)


def secret_values(value: Any, secret_keys: Iterable[str] = DEFAULT_SECRET_KEYS) -> list[str]:
    """Every string stored under a secret-named key, so error text can be scrubbed of them."""
    keys = frozenset(k.lower() for k in secret_keys)
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, Mapping):
            for k, v in node.items():
                if str(k).lower() in keys and isinstance(v, str) and v:
                    found.append(v)
                else:
                    walk(v)
        elif isinstance(node, list | tuple):
            for v in node:
                walk(v)

    walk(value)
    return found


def scrub(text: str, secrets: Iterable[str]) -> str:
    for s in secrets:
        if len(s) >= 4:
            text = text.replace(s, REDACTED)
    return text
