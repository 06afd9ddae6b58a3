"""Secrets read from files instead of the environment.

A variable's value in a process environment is readable by anything that can read
`/proc/<pid>/environ`; a file can be made readable by the daemon's user alone. For each
secret variable NAME, in this order:

1. `NAME_FILE=/path`: the file's content (one trailing newline dropped);
2. a systemd credential (`LoadCredential=`): `$CREDENTIALS_DIRECTORY/ingest.NAME` (the
   shipped units load `LoadCredential=ingest.NAME`, found in /etc/credstore/ingest.NAME and
   skipped when absent) or `$CREDENTIALS_DIRECTORY/NAME`;
3. `NAME` itself.

Setting both NAME and NAME_FILE is an error: one of them would be silently ignored.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

SECRET_VARIABLES = (
    "REDIS_URL",
    "RAG_REDIS_URL",
    "SUPABASE_SERVICE_ROLE_KEY",
    "INGEST_STATUS_DSN",
    "LANGFUSE_SECRET_KEY",
    "INGEST_API_TOKEN",
    "INGEST_API_TENANT_TOKENS",
)
CREDENTIAL_PREFIX = "ingest."
MAX_SECRET_BYTES = 64 * 1024


class SecretFileError(ValueError):
    """A secret file is missing, unreadable or ambiguous; the message names the variable."""


def with_secret_files(env: Mapping[str, str]) -> dict[str, str]:
    """`env` with every secret variable filled in from its file, where one is given."""
    out = dict(env)
    cred_dir = env.get("CREDENTIALS_DIRECTORY") or ""
    for name in SECRET_VARIABLES:
        file_var = f"{name}_FILE"
        path = env.get(file_var)
        if path:
            if env.get(name):
                raise SecretFileError(f"{name} and {file_var}: set one of them, not both")
            out[name] = _read(file_var, path)
            # Resolved: reading the result again (a loader built on another) finds only
            # the value, never "both set".
            del out[file_var]
            continue
        if env.get(name) or not cred_dir:
            continue
        for candidate in (CREDENTIAL_PREFIX + name, name):
            cred = os.path.join(cred_dir, candidate)
            if os.path.isfile(cred):
                out[name] = _read(f"credential {candidate}", cred)
                break
    return out


def _read(source: str, path: str) -> str:
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_SECRET_BYTES + 1)
    except OSError as exc:
        raise SecretFileError(f"{source}={path!r}: cannot be read ({exc.strerror})") from None
    if len(data) > MAX_SECRET_BYTES:
        raise SecretFileError(f"{source}={path!r}: larger than {MAX_SECRET_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise SecretFileError(f"{source}={path!r}: not UTF-8 text") from None
    text = text.removesuffix("\n").removesuffix("\r")
    if not text:
        raise SecretFileError(f"{source}={path!r}: is empty")
    return text
