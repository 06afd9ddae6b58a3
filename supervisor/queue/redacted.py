"""The parts of a job record that carry text from tenants and children, with every secret
removed: what the API and `ingestctl` show of a job, produced in one place."""

from __future__ import annotations

from typing import Any

from supervisor.queue.payload import replace_surrogates
from supervisor.queue.records import JobRecord
from supervisor.queue.redaction import SecretKeys, redact, scrub, scrub_value, secret_values


def redacted_texts(rec: JobRecord, keys: SecretKeys) -> dict[str, Any]:
    """`message`, `error`, `result` and `payload` of a job: values under secret-named keys
    redacted, the payload's secret values scrubbed from every text (in any encoding), and
    lone surrogates replaced so the result always encodes as UTF-8."""
    secrets = secret_values(rec.payload, keys) if rec.payload is not None else []

    def clean(text: str | None) -> str | None:
        return None if text is None else replace_surrogates(scrub(text, secrets))

    return {
        "message": clean(rec.progress_message),
        "error": clean(rec.error),
        "result": replace_surrogates(scrub_value(redact(rec.result, keys), secrets)),
        "payload": None if rec.payload is None else replace_surrogates(redact(rec.payload, keys)),
    }
