"""Secrets in job payloads: which values are secrets (under secret-named keys, and the
credentials of URLs), payload copies without them, and text and child output scrubbed of
them in every form they show up in."""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from secrets import choice as random_choice
from typing import Any
from urllib.parse import quote, quote_plus, unquote, unquote_plus

from supervisor.queue.walk import CONTAINERS, MAX_DEPTH, OBJECTS, walk

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
# Query and fragment parameters of a URL whose values are credentials. Besides every name
# SecretKeys matches (access_token, X-Amz-Credential, X-Amz-Security-Token, api_key,
# password, client_secret, ...): these normalised names, exactly (Azure SAS `sig`, Google's
# API `key`, Firebase's `auth`, `pwd`, `jwt`), and any name ending in one of the suffixes
# (Signature, X-Amz-Signature, X-Goog-Signature). Ordinary names stay readable: `page`, `q`,
# `id`, `lang`, and `code` (an OAuth code is single use, and the name is common).
URL_SECRET_PARAMS = frozenset({"sig", "key", "auth", "pwd", "jwt"})
URL_SECRET_PARAM_SUFFIXES = ("signature",)
# Credentials in URLs shorter than this are redacted in views but not collected for
# scrubbing: `?key=news` or `?auth=true` would otherwise blank those words out of every
# message and result of the job. A bare userinfo (no password: a token, or a user name
# such as `anonymous`) is collected from MIN_URL_USER_TOKEN_CHARS on.
MIN_URL_SECRET_CHARS = 8
MIN_URL_USER_TOKEN_CHARS = 16
# The same for a number stored under a secret-named key, and for the strings and numbers
# of a list or an object stored there: `expires_in: 3600` under `oauth_token`, or `user:
# "docs"` under `credentials`, would otherwise be blanked out of every message.
MIN_NESTED_SECRET_CHARS = 8
REDACTED = "[redacted]"
TOO_DEEP = "[nested too deep]"
_NOT_KEY_CHARS = re.compile(r"[^a-z0-9]")
# A normalised key that ends with a suffix or holds a substring above.
_ALWAYS_SECRET = re.compile(
    "|".join([f"(?:{'|'.join(SECRET_KEY_SUFFIXES)})$", *SECRET_KEY_SUBSTRINGS])
)
# A string that is a URL as a whole: a scheme and "://" at its very start (after the blanks
# and control characters URL parsers skip). Anchored, so any other string fails at once.
_URL_START = re.compile(r"[\x00-\x20]*[A-Za-z][A-Za-z0-9+.-]*://")
_AUTHORITY = re.compile(r"[^/?#]*")  # up to the path, query or fragment
_PARAMS_START = re.compile(r"[?#]")  # the query, or the fragment when there is none
_PARAM = re.compile(r"[^&#]+")  # one name=value of a query or a fragment


# How many keys, of at most how many characters, a SecretKeys remembers its answer for.
KNOWN_KEYS = 4096
KNOWN_KEY_CHARS = 64


def normalise_key(key: object) -> str:
    return _NOT_KEY_CHARS.sub("", str(key).lower())


class SecretKeys:
    """Which keys name secrets: any of `names` once normalised, and any key that ends with
    one of SECRET_KEY_SUFFIXES or contains one of SECRET_KEY_SUBSTRINGS (those always apply)."""

    __slots__ = ("_known", "names")

    def __init__(self, names: Iterable[str] = DEFAULT_SECRET_KEYS) -> None:
        self.names = frozenset(n for n in (normalise_key(k) for k in names) if n)
        # The answer for each short key seen: payloads of one queue repeat the same few.
        # Bounded, so a stream of distinct keys costs at most KNOWN_KEYS entries.
        self._known: dict[object, bool] = {}

    def __call__(self, key: object) -> bool:
        known = self._known.get(key) if type(key) is str else None
        if known is not None:
            return known
        k = normalise_key(key)
        secret = k in self.names or _ALWAYS_SECRET.search(k) is not None
        if type(key) is str and len(key) <= KNOWN_KEY_CHARS:
            if len(self._known) >= KNOWN_KEYS:
                self._known.clear()
            self._known[key] = secret
        return secret


def _matcher(secret_keys: Iterable[str] | SecretKeys) -> SecretKeys:
    return secret_keys if isinstance(secret_keys, SecretKeys) else SecretKeys(secret_keys)


def redact(
    value: Any,
    secret_keys: Iterable[str] | SecretKeys = DEFAULT_SECRET_KEYS,
    max_depth: int = MAX_DEPTH,
) -> Any:
    """A copy of `value` with every secret-named key's value replaced, the credentials of
    every string that is a URL replaced (see `_url_credentials`; the rest of the URL stays
    readable), and anything nested deeper than `max_depth` replaced by a marker (so no later
    encoder meets a deep value)."""
    is_secret = _matcher(secret_keys)
    is_secret_param = _param_rule(is_secret)

    def walk(node: Any, depth: int) -> Any:
        if isinstance(node, str):
            return _redact_url(node, is_secret_param)
        if not isinstance(node, CONTAINERS):
            return node
        if depth >= max_depth:
            return TOO_DEEP
        if isinstance(node, OBJECTS):
            return {k: (REDACTED if is_secret(k) else walk(v, depth + 1)) for k, v in node.items()}
        return [walk(v, depth + 1) for v in node]

    return walk(value, 0)


def secret_values(
    value: Any, secret_keys: Iterable[str] | SecretKeys = DEFAULT_SECRET_KEYS
) -> list[str]:
    """The text of every value stored under a secret-named key (at any depth; a list or an
    object there holds secrets all through, see `secret_texts`), and the credentials of
    every string that is a URL (see `url_secret_values`), so error text can be scrubbed of
    them."""
    is_secret = _matcher(secret_keys)
    is_secret_param = _param_rule(is_secret)
    found: list[str] = []
    for _place, node, _depth in walk(value):
        if isinstance(node, str):
            found.extend(_url_secret_values(node, is_secret_param))
        elif isinstance(node, OBJECTS):
            for k, v in node.items():
                if is_secret(k):
                    found.extend(secret_texts(v))
    return found


def secret_texts(value: Any) -> list[str]:
    """How a value stored under a secret-named key can show up in text: the string itself,
    each string of a list of them, and the other strings and the numbers (as JSON writes
    them) of a number, list or object at any depth below the key from
    MIN_NESTED_SECRET_CHARS on. True, false, null and infinities are no secrets."""
    found: list[str] = []
    for _place, node, depth in walk(value):
        if isinstance(node, float) and not math.isfinite(node):
            continue
        if isinstance(node, int | float) and not isinstance(node, bool):
            node = json.dumps(node)
        elif isinstance(node, str) and depth <= 1 and not isinstance(value, Mapping):
            if node:  # the key's own string, or one of its list of strings
                found.append(node)
            continue
        if isinstance(node, str) and len(node) >= MIN_NESTED_SECRET_CHARS:
            found.append(node)
    return found


def _param_rule(is_secret: SecretKeys) -> Callable[[str], bool]:
    """Whether a URL's query or fragment parameter name (still URL-encoded) names a
    credential (see URL_SECRET_PARAMS). Remembered per name for one walk of a payload: a
    list of a thousand URLs repeats the same few names."""
    known: dict[str, bool] = {}

    def is_secret_param(name: str) -> bool:
        secret = known.get(name)
        if secret is None:
            key = normalise_key(unquote_plus(name) if "%" in name or "+" in name else name)
            secret = (
                key in URL_SECRET_PARAMS
                or key.endswith(URL_SECRET_PARAM_SUFFIXES)
                or is_secret(key)
            )
            known[name] = secret
        return secret

    return is_secret_param


def _url_credentials(
    text: str, is_secret_param: Callable[[str], bool]
) -> tuple[tuple[int, int] | None, list[tuple[int, int, bool]]]:
    """Where the credentials of `text` are when it is a URL as a whole (any scheme, with
    "://"): the span of its userinfo (`user:password` before the host's "@") if it holds
    a password, and the (start, end, is_param) spans to redact, in order and apart: the
    password of the userinfo, or the whole userinfo when it has none (a token passed as
    the user name, as in `https://TOKEN@github.com/...`), and the non-empty value of each
    query or fragment parameter whose name `is_secret_param` matches (`#access_token=` of
    OAuth's implicit flow). Split by hand rather than by urlsplit, so a URL that a parser
    refuses (`http://[::1/`), which the child may quote in its error, is still searched,
    and the rest of the URL stays exactly as written."""
    start = _URL_START.match(text)
    if start is None:
        return None, []
    host_start = start.end()
    authority = _AUTHORITY.match(text, host_start)
    auth_end = authority.end() if authority is not None else host_start
    userinfo: tuple[int, int] | None = None
    spans: list[tuple[int, int, bool]] = []
    at = text.rfind("@", host_start, auth_end)
    if at >= 0:
        colon = text.find(":", host_start, at)
        secret_start = colon + 1 if colon >= 0 else host_start
        if at > secret_start:
            spans.append((secret_start, at, False))
            if colon >= 0:
                userinfo = (host_start, at)
    params = _PARAMS_START.search(text, auth_end)
    if params is not None:
        for param in _PARAM.finditer(text, params.end()):
            name, eq, value = param.group().partition("=")
            if eq and value and is_secret_param(name):
                spans.append((param.start() + len(name) + 1, param.end(), True))
    return userinfo, spans


def url_secret_values(
    text: str, secret_keys: Iterable[str] | SecretKeys = DEFAULT_SECRET_KEYS
) -> list[str]:
    """The credentials of `text` if it is a URL (see `_url_credentials`), each as written
    and percent-decoded (`+` is a space in a parameter), and the whole `user:password`
    pair; those shorter than MIN_URL_SECRET_CHARS are left out."""
    return _url_secret_values(text, _param_rule(_matcher(secret_keys)))


def _url_secret_values(text: str, is_secret_param: Callable[[str], bool]) -> list[str]:
    userinfo, spans = _url_credentials(text, is_secret_param)
    found: dict[str, int] = {}  # value -> the shortest it may be to be collected
    for start, end, is_param in spans:
        raw = text[start:end]
        bare_user = not is_param and userinfo is None
        least = MIN_URL_USER_TOKEN_CHARS if bare_user else MIN_URL_SECRET_CHARS
        for value in (raw, unquote_plus(raw) if is_param else unquote(raw)):
            found.setdefault(value, least)
    if userinfo is not None:
        pair = text[userinfo[0] : userinfo[1]]
        for value in (pair, unquote(pair)):
            found.setdefault(value, MIN_URL_SECRET_CHARS)
    return [value for value, least in found.items() if len(value) >= least]


def _redact_url(text: str, is_secret_param: Callable[[str], bool]) -> str:
    """`text` itself unless it is a URL with credentials; else a copy with each of them
    (see `_url_credentials`) replaced by REDACTED."""
    _userinfo, spans = _url_credentials(text, is_secret_param)
    if not spans:
        return text
    parts: list[str] = []
    last = 0
    for start, end, _is_param in spans:
        parts += (text[last:start], REDACTED)
        last = end
    parts.append(text[last:])
    return "".join(parts)


# Characters left as they are by JavaScript's encodeURIComponent (besides those Python's
# quote always leaves), and by an HTTP client re-encoding a URL it was given (RFC 3986's
# reserved characters: only what a URL cannot hold is encoded).
_URI_COMPONENT_SAFE = "!'()*"
_URL_SAFE = "!#$&'()*+,/:;=?@[]"
_PERCENT_ESCAPE = re.compile(r"%[0-9A-F]{2}")


@functools.lru_cache(maxsize=1024)
def _forms(secret: str) -> frozenset[str]:
    """The ways a secret shows up in text: as is; URL-encoded as Python, JavaScript and
    HTTP clients write it, with upper- or lower-case hex; inside a JSON string, with or
    without "/" escaped. Cached: a job's secrets are scrubbed from each of its progress
    lines."""
    encoded = {
        quote(secret, safe=safe, errors="replace")
        for safe in ("", "/", _URI_COMPONENT_SAFE, _URL_SAFE)
    }
    encoded.add(quote_plus(secret, errors="replace"))
    encoded |= {_PERCENT_ESCAPE.sub(lambda m: m.group().lower(), f) for f in encoded}
    in_json = {json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1]}
    in_json |= {f.replace("/", "\\/") for f in in_json}
    forms = {secret} | encoded | in_json
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


def piece_room(secrets: Iterable[str], limit: int) -> int:
    """Characters to take of a longer text so that `limit` of them can still be shown
    once `scrub_piece` has trimmed a cut end: room for the longest form of a secret."""
    forms = _all_forms(tuple(secrets))
    return limit + (len(forms[0]) if forms else 0)


# Stands for each secret found while a cut end is trimmed (a noncharacter: no text means
# it; one a child prints anyway only becomes a marker too).
_HOLE = "\ufdd0"


def scrub_piece(
    text: str, secrets: Iterable[str], *, cut_start: bool = False, cut_end: bool = False
) -> str:
    """`text`, a piece of a longer text, scrubbed of `secrets`. A secret that a cut went
    through leaves a part of itself that no scrub can recognise, lying within one form's
    length of the cut: so much more goes at each end that was cut (all of a piece shorter
    than that). While it is trimmed, each secret found stands as one character, so the
    text only shrinks and such a part stays within that reach of its end."""
    forms = _all_forms(tuple(secrets))
    if not forms or not text:
        return text
    if not (cut_start or cut_end):
        return _replace_forms(text, forms)
    text = _replace_forms(text, forms, _HOLE)
    drop = len(forms[0]) - 1
    if cut_start:
        text = text[drop:]
    if cut_end:
        text = text[: max(len(text) - drop, 0)]
    return text.replace(_HOLE, REDACTED)


def scrub_value(value: Any, secrets: Iterable[str], max_depth: int = MAX_DEPTH) -> Any:
    """`value` (child-made JSON or text) with every secret in its strings and keys redacted,
    and every number that is one (as JSON writes it, see `secret_texts`) replaced by the
    marker; anything nested deeper than `max_depth` becomes a marker."""
    forms = _all_forms(tuple(secrets))
    numbers = frozenset(f for f in forms if f[-1].isdigit())
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
        # A finite number's repr is its JSON text.
        if isinstance(node, int | float) and not isinstance(node, bool) and repr(node) in numbers:
            return REDACTED
        return node

    return rebuild(value, 0)


def _scrub_all(strings: list[str], forms: tuple[str, ...]) -> list[str]:
    """Each of `strings` scrubbed of `forms`. A child's result can hold a hundred thousand
    short strings: rather than every form scanning each string, each form scans them all
    once, joined by a separator no form and no marker contains (so no replacement can
    reach across two strings). The separator is drawn at random, so a child cannot put
    it in its output; if a string holds it anyway, the split tells, and each string is
    scrubbed alone."""
    if not forms or not strings:
        return strings
    sep = "".join(random_choice(_SEPARATOR_CHARS) for _ in range(8))
    if any(sep in f for f in (*forms, REDACTED)):
        return [_replace_forms(s, forms) for s in strings]
    pieces = _replace_forms(sep.join(strings), forms).split(sep)
    if len(pieces) != len(strings):
        return [_replace_forms(s, forms) for s in strings]
    return pieces


# What _scrub_all's separator is drawn from: the private use area.
_SEPARATOR_CHARS = "".join(chr(c) for c in range(0xE000, 0xF900))


def _replace_forms(text: str, forms: tuple[str, ...], by: str = REDACTED) -> str:
    for form in forms:
        if len(form) <= len(text):
            text = text.replace(form, by)
    return text
