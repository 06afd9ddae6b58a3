"""The job read from stdin: checked just enough to run it (the producer validated it fully).

Mirrors the shape of `supervisor.queue.payload` and `supervisor.queue.redaction` without
importing them: the child must start without loading the daemon's package.
"""

from __future__ import annotations

import json
import math
import re

from ingest_worker.errors import BadInput

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping
    from typing import Any

SOURCE_TYPES = ("text", "file", "url", "crawl")
# The same rules as supervisor.queue.redaction.SecretKeys (a test holds them equal): a key is secret
# when its normalised name (lower case, letters and digits only) is one of SECRET_KEYS or
# INGEST_SECRET_KEYS, ends with one of SECRET_KEY_SUFFIXES or contains one of
# SECRET_KEY_SUBSTRINGS. Secret values never reach stderr, the RESULT line or stored chunk
# metadata.
SECRET_KEYS = frozenset(
    {"trial_token", "token", "api_key", "apikey", "password", "secret", "authorization"}
)
SECRET_KEY_SUFFIXES = (
    "token",
    "authorization",
    "credential",
    "credentials",
    "sessionid",
    "cookie",
    "pwd",
    "jwt",
    "bearer",
    "sshkey",
)
SECRET_KEY_SUBSTRINGS = (
    "secret",
    "password",
    "passwd",
    "passphrase",
    "apikey",
    "privatekey",
    "accesstoken",
)
MAX_DEPTH = 32  # supervisor.queue.walk.MAX_DEPTH
# The same rules as supervisor.queue.redaction for credentials inside a string that is a URL
# (a test holds them equal): the userinfo's password (or the whole userinfo when it has
# none), and the value of each query or fragment parameter whose normalised name SecretKeys
# matches, is one of URL_SECRET_PARAMS or ends with one of URL_SECRET_PARAM_SUFFIXES.
URL_SECRET_PARAMS = frozenset({"sig", "key", "auth", "pwd", "jwt"})
URL_SECRET_PARAM_SUFFIXES = ("signature",)
MIN_URL_SECRET_CHARS = 8
MIN_NESTED_SECRET_CHARS = 8  # supervisor.queue.redaction.MIN_NESTED_SECRET_CHARS
MIN_URL_USER_TOKEN_CHARS = 16
# A URL as a whole: a scheme and "://" at the start (after blanks and control characters).
_URL_START = re.compile(r"[\x00-\x20]*[A-Za-z][A-Za-z0-9+.-]*://")
_AUTHORITY = re.compile(r"[^/?#]*")
_PARAMS_START = re.compile(r"[?#]")
_PARAM = re.compile(r"[^&#]+")


def normalise_key(key: object) -> str:
    return "".join(c for c in str(key).lower() if c.isascii() and c.isalnum())


class SecretKeys:
    __slots__ = ("names",)

    def __init__(self, extra: str = "") -> None:
        names = (*SECRET_KEYS, *extra.replace(",", " ").split())
        self.names = frozenset(n for n in map(normalise_key, names) if n)

    def __call__(self, key: object) -> bool:
        k = normalise_key(key)
        return (
            k in self.names
            or k.endswith(SECRET_KEY_SUFFIXES)
            or any(part in k for part in SECRET_KEY_SUBSTRINGS)
        )


def check_structure(raw: Any) -> None:
    """Refuse what the producer's validation refuses and a record stored before it could
    still hold: nesting deeper than MAX_DEPTH, lone surrogates in strings. Depth first with
    one iterator per level; a node's path is spelled out only for the error (paths built
    for every node repeat a long key once per element of a long list below it)."""
    stack: list[tuple[tuple[str, ...], Iterator[tuple[str, Any]]]] = [((), iter([("job", raw)]))]
    while stack:
        path, children = stack[-1]
        step = next(children, None)
        if step is None:
            stack.pop()
            continue
        name, node = step
        here = (*path, name)
        if len(here) - 1 > MAX_DEPTH:
            raise BadInput(f"{_dotted(here)}: nested more than {MAX_DEPTH} levels deep")
        if isinstance(node, str):
            try:
                node.encode("utf-8")
            except UnicodeEncodeError:
                raise BadInput(f"{_dotted(here)}: not valid Unicode (a lone surrogate)") from None
        elif isinstance(node, dict):
            for k in node:
                try:
                    str(k).encode("utf-8")
                except UnicodeEncodeError:
                    raise BadInput(
                        f"{_dotted(here)}: not valid Unicode (a lone surrogate)"
                    ) from None
            stack.append((here, ((f".{k}", v) for k, v in node.items())))
        elif isinstance(node, list):
            stack.append((here, ((f"[{i}]", v) for i, v in enumerate(node))))


def _dotted(path: tuple[str, ...]) -> str:
    """`a.b[0].c` for ("job", ".a", ".b", "[0]", ".c"); "job" for the job itself."""
    return "".join(path[1:]).removeprefix(".") or path[0]


class Job:
    __slots__ = ("attempt", "job_id", "metadata", "secrets", "source", "source_type", "tenant_id")

    def __init__(self, raw: Mapping[str, Any], env: Mapping[str, str]) -> None:
        job_id = raw.get("job_id") or env.get("INGEST_JOB_ID")
        if not isinstance(job_id, str) or not job_id:
            raise BadInput("job_id: is required and must be a non-empty string")
        tenant = raw.get("tenant_id")
        if not isinstance(tenant, str) or not tenant:
            raise BadInput("tenant_id: is required and must be a non-empty string")
        source = raw.get("data_source")
        if not isinstance(source, dict):
            raise BadInput("data_source: is required and must be an object with a 'type'")
        source_type = source.get("type")
        if source_type not in SOURCE_TYPES:
            raise BadInput(f"data_source.type: must be one of {', '.join(SOURCE_TYPES)}")
        metadata = raw.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise BadInput("metadata: must be an object")
        self.job_id: str = job_id
        self.tenant_id: str = tenant
        self.source: dict[str, Any] = source
        self.source_type: str = source_type
        is_secret = SecretKeys(env.get("INGEST_SECRET_KEYS", ""))
        self.secrets: list[str] = secret_values(raw, is_secret)
        # Secret-named keys go; other values may still quote a secret (a URL's password).
        self.metadata: dict[str, Any] = map_strings(strip_secrets(metadata, is_secret), self.scrub)
        try:
            self.attempt = int(env.get("INGEST_ATTEMPT", "1"))
        except ValueError:
            self.attempt = 1

    def scrub(self, text: str) -> str:
        for value in sorted(self.secrets, key=len, reverse=True):
            if len(value) >= 4:
                text = text.replace(value, "[redacted]")
        return text


def parse_job(data: bytes, env: Mapping[str, str]) -> Job:
    if not data.strip():
        raise BadInput("no job on stdin: expected one JSON object")
    try:
        raw = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise BadInput(f"job on stdin is not valid JSON ({exc.__class__.__name__})") from None
    if not isinstance(raw, dict):
        raise BadInput("job on stdin must be a JSON object")
    check_structure(raw)
    return Job(raw, env)


def strip_secrets(node: Any, is_secret: SecretKeys) -> Any:
    """`node` without secret-named keys (depth is bounded by check_structure)."""
    if isinstance(node, dict):
        return {k: strip_secrets(v, is_secret) for k, v in node.items() if not is_secret(k)}
    if isinstance(node, list):
        return [strip_secrets(v, is_secret) for v in node]
    return node


def map_strings(node: Any, fn: Callable[[str], str]) -> Any:
    """`node` (JSON-like) with `fn` applied to every string and key in it (depth is bounded
    by check_structure)."""
    if isinstance(node, str):
        return fn(node)
    if isinstance(node, dict):
        return {fn(str(k)): map_strings(v, fn) for k, v in node.items()}
    if isinstance(node, list):
        return [map_strings(v, fn) for v in node]
    return node


def secret_values(node: Any, is_secret: SecretKeys) -> list[str]:
    """The text of every value under a secret-named key (see `_secret_texts`), and the
    credentials of every string that is a URL (see `url_secret_values`)."""
    found: list[str] = []
    known: dict[str, bool] = {}  # parameter names already judged: URLs repeat a few names
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            found.extend(url_secret_values(item, is_secret, known))
        elif isinstance(item, dict):
            for k, v in item.items():
                if is_secret(k):
                    found.extend(_secret_texts(v))
                stack.append(v)  # a string is searched for URL credentials too
        elif isinstance(item, list):
            stack.extend(item)
    return found


def _secret_texts(value: Any) -> list[str]:
    """The string itself, each string of a list of them, and the other strings and the
    numbers (as JSON writes them) at any depth from MIN_NESTED_SECRET_CHARS on; never true,
    false, null or an infinity (supervisor's secret_texts)."""
    found: list[str] = []
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            continue
        if isinstance(item, int | float) and not isinstance(item, bool):
            item = json.dumps(item)
        elif isinstance(item, str) and depth <= 1 and not isinstance(value, dict):
            if item:  # the key's own string, or one of its list of strings
                found.append(item)
            continue
        if isinstance(item, str):
            if len(item) >= MIN_NESTED_SECRET_CHARS:
                found.append(item)
        elif isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return found


def url_secret_values(
    text: str, is_secret: SecretKeys, known: dict[str, bool] | None = None
) -> list[str]:
    """The credentials of `text` when it is a URL as a whole, each as written and
    percent-decoded, and the whole `user:password` pair; as
    supervisor.queue.redaction.url_secret_values finds them (split by hand, so a URL no parser
    accepts is searched too). `known`: parameter names already judged, kept by the caller."""
    start = _URL_START.match(text)
    if start is None:
        return []
    host_start = start.end()
    authority = _AUTHORITY.match(text, host_start)
    auth_end = authority.end() if authority is not None else host_start
    # (value as written, whether it is a parameter: "+" decodes to a space there, the
    # shortest it may be to be collected)
    raw: list[tuple[str, bool, int]] = []
    at = text.rfind("@", host_start, auth_end)
    if at >= 0:
        colon = text.find(":", host_start, at)
        secret_start = colon + 1 if colon >= 0 else host_start
        if at > secret_start:
            least = MIN_URL_SECRET_CHARS if colon >= 0 else MIN_URL_USER_TOKEN_CHARS
            raw.append((text[secret_start:at], False, least))
            if colon >= 0:
                raw.append((text[host_start:at], False, MIN_URL_SECRET_CHARS))
    params = _PARAMS_START.search(text, auth_end)
    if params is not None:
        known = {} if known is None else known
        for param in _PARAM.finditer(text, params.end()):
            name, eq, value = param.group().partition("=")
            if not (eq and value):
                continue
            secret = known.get(name)
            if secret is None:
                secret = known[name] = _is_secret_param(name, is_secret)
            if secret:
                raw.append((value, True, MIN_URL_SECRET_CHARS))
    if not raw:
        return []
    # Loaded only for a URL with credentials: a text job's start-up stays lean.
    from urllib.parse import unquote, unquote_plus

    found: dict[str, int] = {}
    for value, is_param, least in raw:
        for form in (value, unquote_plus(value) if is_param else unquote(value)):
            found.setdefault(form, least)
    return [form for form, least in found.items() if len(form) >= least]


def _is_secret_param(name: str, is_secret: SecretKeys) -> bool:
    """Whether a URL's query or fragment parameter `name` (still URL-encoded) names a
    credential."""
    if "%" in name or "+" in name:
        from urllib.parse import unquote_plus

        name = unquote_plus(name)
    key = normalise_key(name)
    return key in URL_SECRET_PARAMS or key.endswith(URL_SECRET_PARAM_SUFFIXES) or is_secret(key)
