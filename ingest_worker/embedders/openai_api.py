"""The OpenAI embeddings protocol over plain HTTP: `POST {base_url}/embeddings`.

Spoken by OpenAI, Azure OpenAI (v1 API), Ollama, vLLM, Hugging Face TEI and LiteLLM. Plain
`http.client` rather than the `openai` package: the package and its dependencies cost a
child more start-up than the whole rest of the worker, and its own retries would have to be
turned off to keep ours (bounded, Retry-After honoured, mapped to exit codes).

Failures: 429/408/409/5xx and network trouble are retried with exponential backoff and
jitter (Retry-After honoured) for at most INGEST_EMBEDDING_RETRY_SECONDS without a success,
then TempFail (75); other 4xx and answers that break the protocol are ConfigError (78),
naming the setting to fix.
"""

from __future__ import annotations

import json
import math
import random
import time
from typing import Any

from ingest_worker.embedders.inputs import plan_batches, token_estimate
from ingest_worker.embedders.post import (
    MAX_RESPONSE_BYTES,
    Endpoint,
    PostFailed,
    Reply,
    ResponseTooLarge,
    post,
)
from ingest_worker.embedders.secret import read_api_key
from ingest_worker.errors import ConfigError, TempFail

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from ingest_worker.config import EmbeddingSettings

PATH = "/embeddings"
RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
BACKOFF_FIRST = 0.5
BACKOFF_CAP = 20.0
_MESSAGE_CHARS = 300
# One input's share of an answer: 16384 dimensions (INGEST_EMBEDDING_DIM's bound) of up to
# 25 characters each, with room to spare.
ANSWER_BYTES_PER_INPUT = 16384 * 32


class OpenAIEmbedder:
    __slots__ = (
        "_key",
        "_notify",
        "dim",
        "endpoint",
        "max_input_tokens",
        "model",
        "name",
        "prompt_tokens",
        "requests",
        "retries",
        "settings",
        "total_tokens",
    )

    def __init__(
        self,
        model: str,
        settings: EmbeddingSettings,
        notify: Callable[[str], None] | None = None,
    ) -> None:
        self.model = model
        self.settings = settings
        self.endpoint = Endpoint(settings.base_url)
        if not self.endpoint.host or not self.endpoint.port:
            raise ConfigError("INGEST_EMBEDDING_BASE_URL: has no host or a bad port")
        self._key = read_api_key(settings)
        self._notify = notify
        self.name = f"openai:{model}"
        self.max_input_tokens: int | None = settings.max_input_tokens
        self.dim: int | None = settings.dimensions
        self.requests = 0
        self.retries = 0
        self.prompt_tokens: int | None = None
        self.total_tokens: int | None = None

    def batches(self, texts: list[str]) -> list[tuple[int, int]]:
        sizes = [token_estimate(t) for t in texts]
        return plan_batches(sizes, self.settings.batch_size, self.settings.batch_tokens)

    def report(self) -> dict[str, Any]:
        return {
            "embedder": "openai",
            "model": self.model,
            "endpoint": self.endpoint.display(PATH),
            "dimensions": self.dim,
            "requests": self.requests,
            "retries": self.retries,
            "prompt_tokens": self.prompt_tokens,
            "total_tokens": self.total_tokens,
        }

    def embed(self, texts: list[str]) -> list[list[float]]:
        body: dict[str, Any] = {"model": self.model, "input": texts, "encoding_format": "float"}
        if self.settings.dimensions is not None:
            body["dimensions"] = self.settings.dimensions
        data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        # What `len(texts)` vectors of the most dimensions any model has can take as JSON:
        # a larger answer is not read (it could take the worker's memory as parsed floats).
        try:
            cap = min(MAX_RESPONSE_BYTES, ANSWER_BYTES_PER_INPUT * len(texts) + (1 << 20))
            reply = self._send(data, cap)
        except ResponseTooLarge as exc:
            raise self._bad(f"{exc} for {len(texts)} inputs") from None
        return self._vectors(reply, len(texts))

    # -- one request, retried ---------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "Accept-Encoding": "identity",
            "User-Agent": "ingest-worker/0.1",
        }
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        return headers

    def _send(self, data: bytes, max_bytes: int) -> Reply:
        settings = self.settings
        give_up = time.monotonic() + settings.retry_seconds
        attempt = 0
        while True:
            self.requests += 1
            reason: str
            wait: float | None = None
            try:
                reply = post(
                    self.endpoint, PATH, self._headers(), data, settings.timeout, max_bytes
                )
            except PostFailed as exc:
                reason = str(exc)
            else:
                if 200 <= reply.status < 300:
                    return reply
                if reply.status not in RETRY_STATUSES:
                    raise self._refused(reply)
                reason = f"HTTP {reply.status}"
                wait = retry_after(reply.headers)
            backoff = min(BACKOFF_CAP, BACKOFF_FIRST * 2**attempt)
            delay = wait if wait is not None else random.uniform(backoff / 2, backoff)
            left = give_up - time.monotonic()
            if delay > left:
                asked = f" (server asked to wait {wait:g}s)" if wait is not None else ""
                raise TempFail(
                    f"embedding API at {self.endpoint.display(PATH)}: {reason}{asked}; gave up "
                    f"after {attempt + 1} attempt(s) within INGEST_EMBEDDING_RETRY_SECONDS="
                    f"{settings.retry_seconds:g}"
                )
            if self._notify is not None:
                self._notify(f"embedding API: {reason}, retrying in {delay:.1f}s")
            time.sleep(delay)
            attempt += 1
            self.retries += 1

    def _refused(self, reply: Reply) -> ConfigError:
        status = reply.status
        where = f"embedding API at {self.endpoint.display(PATH)}: HTTP {status}"
        if status in (401, 403):
            # Never quote the server: some echo part of the key back.
            if not self._key:
                return ConfigError(
                    f"{where}: a key is required; set INGEST_EMBEDDING_API_KEY or "
                    "INGEST_EMBEDDING_API_KEY_FILE"
                )
            return ConfigError(
                f"{where}: the key was refused; check INGEST_EMBEDDING_API_KEY / "
                "INGEST_EMBEDDING_API_KEY_FILE"
            )
        said = self._server_message(reply.body)
        said = f"; server said: {said}" if said else ""
        if status == 404:
            return ConfigError(
                f"{where}: check INGEST_EMBEDDING_MODEL ({self.model!r}) and "
                f"INGEST_EMBEDDING_BASE_URL{said}"
            )
        if status == 413:
            return ConfigError(
                f"{where}: request too large; lower INGEST_EMBEDDING_BATCH_SIZE or "
                f"INGEST_EMBEDDING_BATCH_TOKENS{said}"
            )
        settings = "INGEST_EMBEDDING_MODEL"
        if self.settings.dimensions is not None:
            settings += " / INGEST_EMBEDDING_DIM"
        settings += " / INGEST_EMBEDDING_MAX_INPUT_TOKENS"
        return ConfigError(f"{where}: check {settings} (model {self.model!r}){said}")

    def _server_message(self, body: bytes) -> str:
        """The error text of an OpenAI-style, Ollama/TEI-style or plain-text error body."""
        text = body[:4096].decode("utf-8", "replace")
        try:
            parsed = json.loads(text)
        except (ValueError, RecursionError):
            message = text
        else:
            error = parsed.get("error") if isinstance(parsed, dict) else None
            if isinstance(error, dict):
                error = error.get("message")
            message = error if isinstance(error, str) else text
        message = " ".join(message.split())
        if self._key:
            message = message.replace(self._key, "[redacted]")
        return message[:_MESSAGE_CHARS]

    # -- the answer ----------------------------------------------------------------------------

    def _bad(self, what: str) -> ConfigError:
        return ConfigError(
            f"embedding API at {self.endpoint.display(PATH)}: {what}; INGEST_EMBEDDING_BASE_URL "
            "must point at an OpenAI-compatible embeddings API"
        )

    def _vectors(self, reply: Reply, count: int) -> list[list[float]]:
        try:
            parsed = json.loads(reply.body)
        except (ValueError, RecursionError):
            raise self._bad("the response is not JSON") from None
        items = parsed.get("data") if isinstance(parsed, dict) else None
        if not isinstance(items, list):
            raise self._bad("the response has no 'data' list")
        if len(items) != count:
            raise self._bad(f"{len(items)} vectors came back for {count} inputs")
        out: list[list[float] | None] = [None] * count
        for position, item in enumerate(items):
            if not isinstance(item, dict):
                raise self._bad("a 'data' item is not an object")
            index = item.get("index", position)
            if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < count:
                raise self._bad(f"a vector has index {index!r} for {count} inputs")
            if out[index] is not None:
                raise self._bad(f"two vectors have index {index}")
            out[index] = self._vector(item.get("embedding"))
        self._count_usage(parsed.get("usage"))
        return [v for v in out if v is not None]

    def _vector(self, raw: object) -> list[float]:
        if not isinstance(raw, list) or not raw:
            raise self._bad("an 'embedding' is not a list of numbers")
        for x in raw:
            if isinstance(x, bool) or not isinstance(x, float | int) or not math.isfinite(x):
                raise self._bad("an 'embedding' holds something other than finite numbers")
        if self.dim is None:
            self.dim = len(raw)
        elif len(raw) != self.dim:
            if self.settings.dimensions is not None:
                raise ConfigError(
                    f"embedding API returned {len(raw)}-dimension vectors for model "
                    f"{self.model!r}; INGEST_EMBEDDING_DIM={self.settings.dimensions} asks for "
                    f"{self.dim} (does the model take a 'dimensions' parameter?)"
                )
            raise self._bad(f"vectors of {len(raw)} and {self.dim} dimensions in one job")
        return [float(x) for x in raw]

    def _count_usage(self, usage: object) -> None:
        if not isinstance(usage, dict):
            return
        for field in ("prompt_tokens", "total_tokens"):
            value = usage.get(field)
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                setattr(self, field, (getattr(self, field) or 0) + value)


def retry_after(headers: dict[str, str]) -> float | None:
    """Seconds the server asked us to wait: `retry-after-ms`, or `Retry-After` in seconds or
    as an HTTP date; None when absent or unreadable."""
    raw_ms = headers.get("retry-after-ms", "").strip()
    if raw_ms:
        try:
            ms = float(raw_ms)
        except ValueError:
            pass
        else:
            if math.isfinite(ms) and ms >= 0:
                return ms / 1000
    raw = headers.get("retry-after", "").strip()
    if not raw:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            when = parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        return max(0.0, when.timestamp() - time.time())
    return seconds if math.isfinite(seconds) and seconds >= 0 else None
