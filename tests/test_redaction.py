"""Which keys name secrets, and every form of a secret scrubbed from text; the worker's
copy of the rules (it must start without importing the daemon) agrees with the daemon's."""

from __future__ import annotations

import json
import time
import tracemalloc
from collections.abc import Callable
from urllib.parse import quote, quote_plus

import pytest

from ingest_worker import job as worker_job
from ingest_worker.errors import BadInput
from supervisor.queue import payload

SECRET_NAMES = [
    "access_token",
    "Client-Secret",
    "api-key",
    "X-Api-Key",
    "refresh_token",
    "db_password",
    "trial_token",
    "Authorization",
    "aws_secret_access_key",
    "private_key",
]
PLAIN_NAMES = ["title", "lang", "max_tokens", "job_id", "tenant_id", "url", "tokenizer"]


@pytest.mark.parametrize("name", SECRET_NAMES)
def test_secret_key_names_are_matched_normalised(name: str) -> None:
    assert payload.SecretKeys()(name)
    assert worker_job.SecretKeys()(name)
    assert payload.redact({name: "v"}) == {name: payload.REDACTED}


@pytest.mark.parametrize("name", PLAIN_NAMES)
def test_ordinary_names_are_kept(name: str) -> None:
    assert not payload.SecretKeys()(name)
    assert not worker_job.SecretKeys()(name)


def test_configured_names_are_normalised_and_exact() -> None:
    assert payload.SecretKeys(["house-pin"])("HOUSE_PIN")
    assert worker_job.SecretKeys("house-pin")("HOUSE_PIN")
    assert not payload.SecretKeys(["pin"])("spinach")


def test_worker_and_daemon_share_the_rules() -> None:
    assert worker_job.SECRET_KEYS == payload.DEFAULT_SECRET_KEYS
    assert worker_job.SECRET_KEY_SUFFIXES == payload.SECRET_KEY_SUFFIXES
    assert worker_job.SECRET_KEY_SUBSTRINGS == payload.SECRET_KEY_SUBSTRINGS
    assert worker_job.MAX_DEPTH == payload.MAX_DEPTH


def test_every_encoded_form_and_dict_keys_are_scrubbed() -> None:
    secret = 'tr_a/b+c "é"'
    text = " ".join([secret, quote(secret), quote_plus(secret), json.dumps(secret)])
    assert payload.scrub(text, [secret]).count(payload.REDACTED) == 4
    assert "tr_a" not in payload.scrub(text, [secret])
    value = {secret: [f"x {secret} y"], "k": {"deeper": quote_plus(secret)}}
    assert "tr_a" not in json.dumps(payload.scrub_value(value, [secret]))


def test_redaction_of_a_deep_value_is_bounded_not_a_crash() -> None:
    node: dict[str, object] = {"token": "t"}
    for _ in range(5000):
        node = {"n": node}
    out = payload.redact(node)
    assert json.dumps(out).count(payload.TOO_DEEP) == 1
    assert payload.secret_values(node) == ["t"]


def _peak_bytes(work: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        work()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_checking_a_payload_costs_memory_in_its_size_not_its_paths() -> None:
    """A long key above a long list: every element's dotted path repeats the key, so a
    walk that spells out paths as it goes needs key length x list length (gigabytes for
    a payload within the size limit). Paths are spelled out only for an error."""
    raw = {
        "job_id": "j",
        "tenant_id": "t",
        "data_source": {"type": "text", "text": "x"},
        "metadata": {"k" * 20_000: [0] * 5_000, "secret_token": "s3cr3t-value"},
    }
    size = len(json.dumps(raw))
    assert size < 40_000
    for work in (
        lambda: payload.validate_payload(raw),
        lambda: payload.secret_values(raw),
        lambda: worker_job.check_structure(raw),
    ):
        assert _peak_bytes(work) < 40 * size
    assert payload.secret_values(raw) == ["s3cr3t-value"]


def test_a_refused_payload_still_names_the_offending_field() -> None:
    surrogate = {"job_id": "j", "tenant_id": "t", "data_source": {"type": "text", "text": "x"}}
    surrogate["metadata"] = {"a": [{"b": "ok"}, {"c": "\ud800"}]}
    with pytest.raises(payload.PayloadError) as caught:
        payload.validate_payload(surrogate)
    assert caught.value.field == "metadata.a[1].c"
    with pytest.raises(BadInput, match=r"^metadata\.a\[1\]\.c: not valid Unicode"):
        worker_job.check_structure(surrogate)
    deep: dict[str, object] = {}
    node = deep
    for _ in range(payload.MAX_DEPTH + 2):
        node["n"] = {}
        node = node["n"]  # type: ignore[assignment]
    too_deep = {**surrogate, "metadata": {"fine": 1}, "data_source": {"type": "text", **deep}}
    with pytest.raises(payload.PayloadError) as caught:
        payload.validate_payload(too_deep)
    assert caught.value.field == "data_source"


def test_a_payload_holds_a_bounded_number_of_secrets() -> None:
    """Every secret value is scrubbed, in six forms, from every progress line, error and
    result string: their number is bounded, counted under the deployment's own names."""
    base = {"job_id": "j", "tenant_id": "t", "data_source": {"type": "text", "text": "x"}}
    limit = payload.MAX_SECRET_VALUES
    fine = {**base, "metadata": {f"k{i}_token": f"value-{i:05d}" for i in range(limit)}}
    payload.validate_payload(fine)
    # The same value many times is one secret.
    payload.validate_payload({**base, "metadata": {f"k{i}_token": "same" for i in range(999)}})
    too_many = {**base, "metadata": {f"k{i}_token": f"value-{i:05d}" for i in range(limit + 1)}}
    with pytest.raises(payload.PayloadError, match="secret-named"):
        payload.validate_payload(too_many)
    house = {**base, "metadata": {f"k{i}": {"house_pin": f"p{i:05d}"} for i in range(limit + 1)}}
    payload.validate_payload(house)
    with pytest.raises(payload.PayloadError, match="secret-named"):
        payload.validate_payload(house, payload.SecretKeys(["house_pin"]))


def test_scrubbing_a_large_result_costs_one_pass_per_form_not_one_per_string() -> None:
    """A child's result of a megabyte of short strings, and a payload with as many secrets
    as it may hold: the result is scrubbed in well under a second (one scan of every
    string per form would hold the daemon's event loop for seconds)."""
    # Six forms each: as is, three URL encodings, two JSON ones.
    secrets = [f'se cr/\u00e9"t-{i:04d}' for i in range(payload.MAX_SECRET_VALUES)]
    result = {"chunks": ["abcdefgh"] * 100_000, secrets[7]: [f"x {secrets[3]} y", "ok"]}
    started = time.perf_counter()
    scrubbed = payload.scrub_value(result, secrets)
    elapsed = time.perf_counter() - started
    assert scrubbed[payload.REDACTED] == [f"x {payload.REDACTED} y", "ok"]
    assert scrubbed["chunks"] == result["chunks"]
    assert elapsed < 1.0, elapsed
