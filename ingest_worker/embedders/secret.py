"""The embedding API key: from the environment, a file, or a systemd credential.

Only its source is ever named in a message, never its value or a part of it.
"""

from __future__ import annotations

import os

from ingest_worker.errors import ConfigError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ingest_worker.config import EmbeddingSettings

# `LoadCredential=ingest-embedding-api-key:...` in the unit; read when CREDENTIALS_DIRECTORY
# reaches the child and neither variable below is set.
CREDENTIAL_NAME = "ingest-embedding-api-key"
_MAX_KEY_BYTES = 16 * 1024


def read_api_key(settings: EmbeddingSettings) -> str | None:
    if settings.api_key_env and settings.api_key_file:
        raise ConfigError(
            "INGEST_EMBEDDING_API_KEY and INGEST_EMBEDDING_API_KEY_FILE are both set; keep one"
        )
    if settings.api_key_env:
        return _checked(settings.api_key_env, "INGEST_EMBEDDING_API_KEY")
    if settings.api_key_file:
        return _read(settings.api_key_file, "INGEST_EMBEDDING_API_KEY_FILE")
    if settings.credentials_dir:
        path = os.path.join(settings.credentials_dir, CREDENTIAL_NAME)
        if os.path.exists(path):
            return _read(path, f"systemd credential {CREDENTIAL_NAME}")
    return None


def _checked(key: str, source: str) -> str:
    # It goes into an HTTP header: printable ASCII without spaces, or the request would fail
    # somewhere a traceback could quote it.
    if not key or not all("!" <= c <= "~" for c in key):
        raise ConfigError(f"{source}: the key must be one word of printable ASCII")
    return key


def _read(path: str, source: str) -> str:
    try:
        with open(path, "rb") as f:
            raw = f.read(_MAX_KEY_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read the key file ({exc.strerror or exc})") from None
    if len(raw) > _MAX_KEY_BYTES:
        raise ConfigError(f"{source}: the key file is larger than {_MAX_KEY_BYTES} bytes")
    try:
        key = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ConfigError(f"{source}: the key file is not UTF-8 text") from None
    return _checked(key, source)
