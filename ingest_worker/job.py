"""The job read from stdin: checked just enough to run it (the producer validated it fully).

Mirrors the shape of `supervisor.payload` without importing it: the child must start without
loading the daemon's package.
"""

from __future__ import annotations

import json

from ingest_worker.errors import BadInput

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

SOURCE_TYPES = ("text", "file", "url", "crawl")
# Same names as supervisor.payload.DEFAULT_SECRET_KEYS: their values never reach
# stderr, the RESULT line or stored chunk metadata.
SECRET_KEYS = frozenset(
    {"trial_token", "token", "api_key", "apikey", "password", "secret", "authorization"}
)


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
        self.secrets: list[str] = secret_values(raw)
        self.metadata: dict[str, Any] = strip_secrets(metadata)
        try:
            self.attempt = int(env.get("INGEST_ATTEMPT", "1"))
        except ValueError:
            self.attempt = 1

    def scrub(self, text: str) -> str:
        for value in self.secrets:
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
    return Job(raw, env)


def strip_secrets(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: strip_secrets(v) for k, v in node.items() if str(k).lower() not in SECRET_KEYS}
    if isinstance(node, list):
        return [strip_secrets(v) for v in node]
    return node


def secret_values(node: Any) -> list[str]:
    found: list[str] = []
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for k, v in item.items():
                if str(k).lower() in SECRET_KEYS and isinstance(v, str):
                    found.append(v)
                else:
                    stack.append(v)
        elif isinstance(item, list):
            stack.extend(item)
    return found
