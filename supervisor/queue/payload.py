"""Validation of job payloads at enqueue time, and removal of secrets before anything is logged.

A payload is rejected as a whole with a message naming the field and the rule; nothing of a
rejected payload is ever stored.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import quote, quote_plus

JOB_ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
TENANT_ID_RE = re.compile(r"^[A-Za-z0-9_.:@-]{1,128}$")
DATA_SOURCE_TYPES = ("text", "file", "url", "crawl")
PRIORITIES = ("high", "normal")
MAX_PAYLOAD_BYTES = 256 * 1024
MAX_TIMEOUT_S = 7 * 24 * 3600
MAX_ATTEMPTS_LIMIT = 100
# Deepest nesting of objects and lists a payload may have. Everything that walks a payload
# (redaction, JSON encoders, the child) stays far from Python's recursion limit.
MAX_DEPTH = 32
MAX_TRIAL_TOKEN_CHARS = 4096
# Distinct values under secret-named keys a payload may hold: each is scrubbed, in every
# form `_forms` knows, from every progress line, error and result string of its job.
MAX_SECRET_VALUES = 100
DEFAULT_SECRET_KEYS: frozenset[str] = frozenset(
    {"trial_token", "token", "api_key", "apikey", "password", "secret", "authorization"}
)
# A key whose normalised name (lower case, letters and digits only) ends with one of the
# suffixes or contains one of the substrings is secret, whatever the configuration:
# access_token, client_secret, api-key, X-Auth-Token, db_password, aws_secret_access_key.
SECRET_KEY_SUFFIXES = (
    "token",
    "authorization",
    "credential",
    "credentials",
    "sessionid",
    "cookie",
)
SECRET_KEY_SUBSTRINGS = ("secret", "password", "passwd", "apikey", "privatekey", "accesstoken")
REDACTED = "[redacted]"
TOO_DEEP = "[nested too deep]"
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
_NOT_KEY_CHARS = re.compile(r"[^a-z0-9]")
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
    raw: object, secret_keys: Iterable[str] | SecretKeys = DEFAULT_SECRET_KEYS
) -> dict[str, Any]:
    """Return a normalised copy of a valid payload or raise PayloadError. `secret_keys`:
    the names whose values count as secrets (see MAX_SECRET_VALUES)."""
    if not isinstance(raw, Mapping):
        raise PayloadError("payload", "must be a JSON object")
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
    if len(set(secret_values(raw, secret_keys))) > MAX_SECRET_VALUES:
        raise PayloadError(
            "payload", f"must hold at most {MAX_SECRET_VALUES} values under secret-named keys"
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


# A node's place in a value: a link to its parent's place, its key there and whether that
# key is a list index. Spelled out as a dotted path only for an error message: paths built
# for every node repeat their ancestors' keys, which a long key above a long list turns
# into gigabytes.
_Place = tuple["_Place", object, bool] | None


def _children(node: Any) -> Iterator[tuple[object, Any, bool]] | None:
    if isinstance(node, Mapping):
        return ((k, v, False) for k, v in node.items())
    if isinstance(node, list | tuple):
        return ((i, v, True) for i, v in enumerate(node))
    return None


def _walk(value: Any) -> Iterator[tuple[_Place, Any, int]]:
    """(place, node, depth) for every node of a JSON-like value, depth first, without
    recursion; memory grows with the depth only (one iterator per level)."""
    yield None, value, 0
    top = _children(value)
    stack: list[tuple[_Place, Iterator[tuple[object, Any, bool]], int]] = []
    if top is not None:
        stack.append((None, top, 1))
    while stack:
        parent, children, depth = stack[-1]
        step = next(children, None)
        if step is None:
            stack.pop()
            continue
        key, node, is_index = step
        place: _Place = (parent, key, is_index)
        yield place, node, depth
        below = _children(node)
        if below is not None:
            stack.append((place, below, depth + 1))


def _dotted(place: _Place) -> str:
    """`a.b[0].c` for a place."""
    parts: list[str] = []
    while place is not None:
        place, key, is_index = place
        parts.append(f"[{key}]" if is_index else f".{key}")
    return "".join(reversed(parts)).removeprefix(".")


def _top_field(place: _Place) -> str:
    """The top-level field a place is under."""
    key: object = ""
    while place is not None:
        place, key, _is_index = place
    return str(key)


def check_structure(value: Any) -> None:
    """Refuse nesting deeper than MAX_DEPTH and strings that are not valid Unicode (lone
    surrogates, which no UTF-8 encoder accepts), naming the first offending field."""
    for place, node, depth in _walk(value):
        if depth > MAX_DEPTH:
            raise PayloadError(
                _top_field(place) or "payload", f"must be nested at most {MAX_DEPTH} levels deep"
            )
        if isinstance(node, str) and _SURROGATES.search(node):
            raise PayloadError(
                _dotted(place) or "payload", "must be valid Unicode (a lone surrogate)"
            )
        if isinstance(node, Mapping):
            for k in node:
                if isinstance(k, str) and _SURROGATES.search(k):
                    raise PayloadError(_dotted(place) or "payload", "keys must be valid Unicode")


def normalise_key(key: object) -> str:
    return _NOT_KEY_CHARS.sub("", str(key).lower())


class SecretKeys:
    """Which keys name secrets: any of `names` once normalised, and any key that ends with
    one of SECRET_KEY_SUFFIXES or contains one of SECRET_KEY_SUBSTRINGS (those always apply)."""

    __slots__ = ("names",)

    def __init__(self, names: Iterable[str] = DEFAULT_SECRET_KEYS) -> None:
        self.names = frozenset(n for n in (normalise_key(k) for k in names) if n)

    def __call__(self, key: object) -> bool:
        k = normalise_key(key)
        return (
            k in self.names
            or k.endswith(SECRET_KEY_SUFFIXES)
            or any(part in k for part in SECRET_KEY_SUBSTRINGS)
        )


def _matcher(secret_keys: Iterable[str] | SecretKeys) -> SecretKeys:
    return secret_keys if isinstance(secret_keys, SecretKeys) else SecretKeys(secret_keys)


def redact(
    value: Any,
    secret_keys: Iterable[str] | SecretKeys = DEFAULT_SECRET_KEYS,
    max_depth: int = MAX_DEPTH,
) -> Any:
    """A copy of `value` with every secret-named key's value replaced, and anything nested
    deeper than `max_depth` replaced by a marker (so no later encoder meets a deep value)."""
    is_secret = _matcher(secret_keys)

    def walk(node: Any, depth: int) -> Any:
        if isinstance(node, Mapping | list | tuple) and depth >= max_depth:
            return TOO_DEEP
        if isinstance(node, Mapping):
            return {k: (REDACTED if is_secret(k) else walk(v, depth + 1)) for k, v in node.items()}
        if isinstance(node, list | tuple):
            return [walk(v, depth + 1) for v in node]
        return node

    return walk(value, 0)


def secret_values(
    value: Any, secret_keys: Iterable[str] | SecretKeys = DEFAULT_SECRET_KEYS
) -> list[str]:
    """Every string stored under a secret-named key (at any depth), so error text can be
    scrubbed of them."""
    is_secret = _matcher(secret_keys)
    found: list[str] = []
    for _place, node, _depth in _walk(value):
        if isinstance(node, Mapping):
            for k, v in node.items():
                if is_secret(k) and isinstance(v, str) and v:
                    found.append(v)
    return found


@functools.lru_cache(maxsize=1024)
def _forms(secret: str) -> frozenset[str]:
    """The ways a secret shows up in text: as is, URL-encoded, inside a JSON string.
    Cached: a job's secrets are scrubbed from each of its progress lines."""
    forms = {
        secret,
        quote(secret, safe="", errors="replace"),
        quote(secret, errors="replace"),
        quote_plus(secret, errors="replace"),
    }
    forms.add(json.dumps(secret)[1:-1])
    forms.add(json.dumps(secret, ensure_ascii=False)[1:-1])
    return frozenset(f for f in forms if len(f) >= 4)


@functools.lru_cache(maxsize=16)
def _all_forms(secrets: tuple[str, ...]) -> tuple[str, ...]:
    """Every form of every secret, longest first. Cached: a job's secrets are the same for
    each of its progress lines, and a payload may hold thousands (a few MB of forms, so
    only the last few sets are kept)."""
    forms: set[str] = set()
    for s in secrets:
        if len(s) >= 4:
            forms |= _forms(s)
    return tuple(sorted(forms, key=len, reverse=True))


def scrub(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret replaced, in any of the forms `_forms` knows; longest
    first, so a form that contains another is replaced whole."""
    return _replace_forms(text, _all_forms(tuple(secrets))) if text else text


def scrub_value(value: Any, secrets: Iterable[str], max_depth: int = MAX_DEPTH) -> Any:
    """`value` (child-made JSON or text) with every secret in its strings and keys redacted;
    anything nested deeper than `max_depth` becomes a marker."""
    forms = _all_forms(tuple(secrets))
    strings: list[str] = []  # every key and string, in the order `rebuild` meets them

    def collect(node: Any, depth: int) -> None:
        if isinstance(node, str):
            strings.append(node)
        elif isinstance(node, dict | list) and depth >= max_depth:
            return
        elif isinstance(node, dict):
            for k, v in node.items():
                strings.append(str(k))
                collect(v, depth + 1)
        elif isinstance(node, list):
            for v in node:
                collect(v, depth + 1)

    collect(value, 0)
    scrubbed = iter(_scrub_all(strings, forms))

    def rebuild(node: Any, depth: int) -> Any:
        if isinstance(node, str):
            return next(scrubbed)
        if isinstance(node, dict | list) and depth >= max_depth:
            return TOO_DEEP
        if isinstance(node, dict):
            out: dict[str, Any] = {}
            for v in node.values():
                key = next(scrubbed)
                out[key] = rebuild(v, depth + 1)
            return out
        if isinstance(node, list):
            return [rebuild(v, depth + 1) for v in node]
        return node

    return rebuild(value, 0)


def _scrub_all(strings: list[str], forms: tuple[str, ...]) -> list[str]:
    """Each of `strings` scrubbed of `forms`. A child's result can hold a hundred thousand
    short strings: rather than every form scanning each string, each form scans them all
    once, joined by a character that none of them, no form and no marker contains (so no
    replacement can reach across two strings)."""
    if not forms or not strings:
        return strings
    used = set(REDACTED).union(*strings, *forms)
    sep = next((c for c in _SEPARATORS if c not in used), None)
    if sep is None:  # every candidate is taken: one string at a time
        return [_replace_forms(s, forms) for s in strings]
    return _replace_forms(sep.join(strings), forms).split(sep)


# Candidates for _scrub_all's separator: control characters, then the private use area.
_SEPARATORS = "".join(chr(c) for c in (*range(1, 32), *range(0xE000, 0xF900)))


def _replace_forms(text: str, forms: tuple[str, ...]) -> str:
    for form in forms:
        if len(form) <= len(text):
            text = text.replace(form, REDACTED)
    return text


def strict_json(value: Any) -> bytes:
    """`value` as JSON in UTF-8 that any strict reader takes (PostgreSQL's jsonb, a
    UTF-8 encoder): ValueError for NaN, Infinity or a lone surrogate."""
    return json.dumps(value, allow_nan=False, ensure_ascii=False).encode("utf-8")


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
