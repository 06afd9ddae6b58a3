"""A loopback server speaking the OpenAI embeddings API: `POST /v1/embeddings`.

Strict like the real one: it checks the bearer key, the JSON body's shape (`model`, `input`
as a string or a list of strings, `encoding_format`, `dimensions` only for models that take
it, at most 2048 inputs, no input over the model's limit) and answers with the real shapes,
including the `usage` block and OpenAI-style error bodies. Vectors are a deterministic
function of the text, so a test can check each input got its own vector in order.

Faults are scripted per request (`script`), then normal service resumes.
"""

from __future__ import annotations

import json
import math
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# name -> (native dimensions, takes a `dimensions` parameter, max tokens per input)
MODELS: dict[str, tuple[int, bool, int]] = {
    "test-embed-small": (16, True, 8191),
    "test-embed-fixed": (24, False, 512),
}
MAX_INPUTS = 2048
KEY = "sk-test-0123456789abcdefLOOPBACK"


def tokens_of(text: str) -> int:
    """The server's own token count: words plus punctuation runs, at least one per input."""
    return max(1, len(text.split()))


def vector_for(text: str, dims: int) -> list[float]:
    seed = zlib.crc32(text.encode())
    raw = [math.sin(seed * (i + 1) * 0.000123 + i) for i in range(dims)]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [round(x / norm, 7) for x in raw]


@dataclass
class Fault:
    """One scripted answer: a status with headers and body, `hang` (read the request, never
    answer), `trickle_s`, or `wrong_count` / `wrong_size` (a 200 that breaks the protocol)."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    hang: bool = False
    trickle_s: float = 0.0  # a normal answer, its body sent one byte per this many seconds
    wrong_count: bool = False
    wrong_size: bool = False


@dataclass
class Seen:
    at: float
    path: str
    headers: dict[str, str]
    body: dict[str, Any] | None
    status: int


class EmbeddingsAPI:
    def __init__(self, key: str | None = KEY, latency_s: float = 0.0) -> None:
        self.key = key
        self.latency_s = latency_s
        self.script: list[Fault] = []
        self.seen: list[Seen] = []
        self.release = threading.Event()
        self._lock = threading.Lock()
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                api._handle(self)

            def do_GET(self) -> None:
                self._error(404, "not found")

            def _error(self, status: int, message: str) -> None:
                api._send(self, status, {"error": {"message": message, "type": "x"}})

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    @property
    def requests(self) -> list[Seen]:
        return [s for s in self.seen if s.path == "/v1/embeddings"]

    # -- serving ---------------------------------------------------------------------------

    @staticmethod
    def _send(
        h: BaseHTTPRequestHandler,
        status: int,
        payload: Any,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> None:
        body = raw if raw is not None else json.dumps(payload).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def _record(self, h: BaseHTTPRequestHandler, body: dict[str, Any] | None, status: int) -> None:
        with self._lock:
            self.seen.append(
                Seen(time.monotonic(), h.path, {k.lower(): v for k, v in h.headers.items()},
                     body, status)
            )  # fmt: skip

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length)
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        with self._lock:
            fault = self.script.pop(0) if self.script else None
        if self.latency_s:
            time.sleep(self.latency_s)
        if fault is not None and fault.hang:
            self._record(h, body, 0)
            self.release.wait(60)
            return
        if fault is not None and (fault.status != 200 or fault.body is not None):
            self._record(h, body, fault.status)
            error = {"error": {"message": f"scripted {fault.status}", "type": "server_error",
                               "param": None, "code": None}}  # fmt: skip
            self._send(h, fault.status, error, fault.headers, fault.body)
            return
        status, payload = self._answer(h, body, fault)
        self._record(h, body, status)
        if fault is not None and fault.trickle_s:
            self._trickle(h, status, json.dumps(payload).encode(), fault.trickle_s)
            return
        self._send(h, status, payload)

    def _trickle(self, h: BaseHTTPRequestHandler, status: int, body: bytes, every: float) -> None:
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        for i in range(len(body)):
            if self.release.wait(every):
                return
            h.wfile.write(body[i : i + 1])
            h.wfile.flush()

    def _answer(
        self, h: BaseHTTPRequestHandler, body: Any, fault: Fault | None
    ) -> tuple[int, dict[str, Any]]:
        def err(
            status: int, message: str, code: str | None, param: str | None = None
        ) -> tuple[int, dict[str, Any]]:
            return status, {"error": {"message": message, "type": "invalid_request_error",
                                      "param": param, "code": code}}  # fmt: skip

        if h.path != "/v1/embeddings":
            return err(404, f"Invalid URL (POST {h.path})", None)
        if self.key is not None:
            auth = h.headers.get("Authorization", "")
            if auth != f"Bearer {self.key}":
                given = auth.removeprefix("Bearer ")
                # The real API echoes a masked key: the worker must never pass it on.
                masked = given[:3] + "*" * 8 + given[-4:] if len(given) > 8 else given
                return err(401, f"Incorrect API key provided: {masked}.", "invalid_api_key")
        if h.headers.get("Content-Type", "").split(";")[0] != "application/json":
            return err(400, "Content-Type must be application/json", None)
        if not isinstance(body, dict):
            return err(400, "We could not parse the JSON body of your request.", None)
        unknown = set(body) - {"model", "input", "encoding_format", "dimensions", "user"}
        if unknown:
            return err(400, f"Unrecognized request argument supplied: {sorted(unknown)[0]}", None)
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return err(400, "you must provide a model parameter", None, "model")
        if model not in MODELS:
            return err(404, f"The model `{model}` does not exist or you do not have access to it.",
                       "model_not_found")  # fmt: skip
        native, flexible, max_tokens = MODELS[model]
        inputs = body.get("input")
        if isinstance(inputs, str):
            inputs = [inputs]
        if (
            not isinstance(inputs, list)
            or not inputs
            or not all(isinstance(t, str) and t for t in inputs)
        ):
            return err(400, "'input' must be a non-empty string or array of strings", None, "input")
        if len(inputs) > MAX_INPUTS:
            return err(400, f"'input' has more than {MAX_INPUTS} items", None, "input")
        if body.get("encoding_format", "float") != "float":
            return err(400, "this stand-in speaks encoding_format=float only", None)
        dims = native
        if "dimensions" in body:
            wanted = body["dimensions"]
            if not flexible:
                return err(400, "This model does not support specifying dimensions.", None,
                           "dimensions")  # fmt: skip
            if not isinstance(wanted, int) or not 1 <= wanted <= native:
                return err(400, "Invalid 'dimensions'", None, "dimensions")
            dims = wanted
        counts = [tokens_of(t) for t in inputs]
        for c in counts:
            if c > max_tokens:
                return err(400, f"This model's maximum context length is {max_tokens} tokens, "
                                f"however you requested {c} tokens.", None)  # fmt: skip
        data: list[dict[str, Any]] = [
            {"object": "embedding", "index": i, "embedding": vector_for(t, dims)}
            for i, t in enumerate(inputs)
        ]
        if fault is not None and fault.wrong_count:
            data = data[:-1]
        if fault is not None and fault.wrong_size:
            data[0]["embedding"] = data[0]["embedding"][:-1]
        used = sum(counts)
        return 200, {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": used, "total_tokens": used},
        }


@contextmanager
def embeddings_api(key: str | None = KEY, latency_s: float = 0.0) -> Iterator[EmbeddingsAPI]:
    api = EmbeddingsAPI(key, latency_s)
    try:
        yield api
    finally:
        api.close()
