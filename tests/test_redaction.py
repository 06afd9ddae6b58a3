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
from supervisor.queue import payload, redaction

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
    # Names a URL's parameters are read as secrets by: a payload key of the same name too.
    "pwd",
    "db_pwd",
    "jwt",
    "id_jwt",
    "bearer",
    "passphrase",
    "key_passphrase",
    "ssh_key",
]
PLAIN_NAMES = ["title", "lang", "max_tokens", "job_id", "tenant_id", "url", "tokenizer"]


@pytest.mark.parametrize("name", SECRET_NAMES)
def test_secret_key_names_are_matched_normalised(name: str) -> None:
    assert redaction.SecretKeys()(name)
    assert worker_job.SecretKeys()(name)
    assert redaction.redact({name: "v"}) == {name: redaction.REDACTED}


@pytest.mark.parametrize("name", PLAIN_NAMES)
def test_ordinary_names_are_kept(name: str) -> None:
    assert not redaction.SecretKeys()(name)
    assert not worker_job.SecretKeys()(name)


def test_configured_names_are_normalised_and_exact() -> None:
    assert redaction.SecretKeys(["house-pin"])("HOUSE_PIN")
    assert worker_job.SecretKeys("house-pin")("HOUSE_PIN")
    assert not redaction.SecretKeys(["pin"])("spinach")


def test_worker_and_daemon_share_the_rules() -> None:
    assert worker_job.SECRET_KEYS == redaction.DEFAULT_SECRET_KEYS
    assert worker_job.SECRET_KEY_SUFFIXES == redaction.SECRET_KEY_SUFFIXES
    assert worker_job.SECRET_KEY_SUBSTRINGS == redaction.SECRET_KEY_SUBSTRINGS
    assert worker_job.MAX_DEPTH == payload.MAX_DEPTH


def test_every_encoded_form_and_dict_keys_are_scrubbed() -> None:
    secret = 'tr_a/b+c "é"'
    text = " ".join([secret, quote(secret), quote_plus(secret), json.dumps(secret)])
    assert redaction.scrub(text, [secret]).count(redaction.REDACTED) == 4
    assert "tr_a" not in redaction.scrub(text, [secret])
    value = {secret: [f"x {secret} y"], "k": {"deeper": quote_plus(secret)}}
    assert "tr_a" not in json.dumps(redaction.scrub_value(value, [secret]))


@pytest.mark.parametrize(
    "form",
    [
        "s3cr3t%20pa!ss%2Fw%C3%B6rd%26x",  # JavaScript's encodeURIComponent
        "s3cr3t%20pa%21ss%2fw%c3%b6rd%26x",  # percent-encoding in lower case
        "s3cr3t%20pa!ss/w%C3%B6rd&x",  # a URL re-encoded by an HTTP client (httpx, requests)
        '"s3cr3t pa!ss\\/w\\u00f6rd&x"',  # JSON that escapes "/" (PHP, some Java)
        '"s3cr3t pa!ss\\/wörd&x"',
    ],
)
def test_the_encodings_other_languages_and_http_clients_write_are_scrubbed(form: str) -> None:
    secret = "s3cr3t pa!ss/wörd&x"
    scrubbed = redaction.scrub(f"GET failed for {form} (x)", [secret])
    assert "s3cr3t" not in scrubbed and "rd" not in scrubbed.split("for", 1)[1], scrubbed


def test_redaction_of_a_deep_value_is_bounded_not_a_crash() -> None:
    node: dict[str, object] = {"token": "t"}
    for _ in range(5000):
        node = {"n": node}
    out = redaction.redact(node)
    assert json.dumps(out).count(redaction.TOO_DEEP) == 1
    assert redaction.secret_values(node) == ["t"]


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
        lambda: redaction.secret_values(raw),
        lambda: worker_job.check_structure(raw),
    ):
        assert _peak_bytes(work) < 40 * size
    assert redaction.secret_values(raw) == ["s3cr3t-value"]


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
        payload.validate_payload(house, redaction.SecretKeys(["house_pin"]))


def test_scrubbing_a_large_result_costs_one_pass_per_form_not_one_per_string() -> None:
    """A child's result of a megabyte of short strings, and a payload with a hundred
    secrets: the result is scrubbed in well under a second (one scan of every
    string per form would hold the daemon's event loop for seconds)."""
    # Six forms each: as is, three URL encodings, two JSON ones.
    secrets = [f'se cr/\u00e9"t-{i:04d}' for i in range(100)]
    result = {"chunks": ["abcdefgh"] * 100_000, secrets[7]: [f"x {secrets[3]} y", "ok"]}
    started = time.perf_counter()
    scrubbed = redaction.scrub_value(result, secrets)
    elapsed = time.perf_counter() - started
    assert scrubbed[redaction.REDACTED] == [f"x {redaction.REDACTED} y", "ok"]
    assert scrubbed["chunks"] == result["chunks"]
    assert elapsed < 1.0, elapsed


# ---- credentials inside URLs -------------------------------------------------------------

SIGNED = (
    "https://bob:hunter2pw@host.example/path?X-Amz-Credential=AKIAEXAMPLE"
    "&X-Amz-Signature=deadbeefsig&access_token=tok-SECRET-123&page=2"
)
SIGNED_SECRETS = ("hunter2pw", "AKIAEXAMPLE", "deadbeefsig", "tok-SECRET-123")
SECRET_PARAMS = [
    "sig",
    "signature",
    "X-Amz-Signature",
    "X-Amz-Credential",
    "X-Amz-Security-Token",
    "X-Goog-Signature",
    "key",
    "api_key",
    "access_token",
    "password",
    "pwd",
    "client_secret",
    "auth",
    "jwt",
]
PLAIN_PARAMS = [
    "page",
    "q",
    "id",
    "lang",
    "per_page",
    "code",
    "state",
    "keyword",
    "monkey",
    "max_tokens",
    "tokenizer",
    "X-Amz-Date",
    "X-Amz-SignedHeaders",
]


def _url_job(source: dict[str, object], **extra: object) -> dict[str, object]:
    return {"job_id": "j", "tenant_id": "t", "data_source": source, **extra}


def test_secrets_of_a_url_are_found() -> None:
    found = redaction.secret_values(_url_job({"type": "url", "url": SIGNED}))
    assert set(found) == {*SIGNED_SECRETS, "bob:hunter2pw"}


@pytest.mark.parametrize("name", SECRET_PARAMS)
def test_secret_query_parameters_are_found_and_redacted(name: str) -> None:
    url = f"https://h.example/x?page=3&{name}=v4lue-of-{name}#top"
    assert redaction.secret_values({"u": url}) == [f"v4lue-of-{name}"]
    assert redaction.redact({"u": url}) == {
        "u": f"https://h.example/x?page=3&{name}=[redacted]#top"
    }


@pytest.mark.parametrize("name", PLAIN_PARAMS)
def test_ordinary_query_parameters_are_kept(name: str) -> None:
    url = f"https://h.example/x?{name}=ordinary-value"
    assert redaction.secret_values({"u": url}) == []
    assert redaction.redact({"u": url}) == {"u": url}


def test_a_url_is_redacted_and_stays_readable() -> None:
    shown = redaction.redact(_url_job({"type": "url", "url": SIGNED}))
    assert shown["data_source"]["url"] == (
        "https://bob:[redacted]@host.example/path?X-Amz-Credential=[redacted]"
        "&X-Amz-Signature=[redacted]&access_token=[redacted]&page=2"
    )


def test_urls_in_lists_and_crawl_seeds_are_found_and_redacted() -> None:
    plain = "https://example.com/docs?page=1"
    raw = _url_job(
        {"type": "crawl", "urls": [plain, SIGNED], "crawl_depth": 2},
        metadata={"seeds": [{"href": SIGNED}]},
    )
    assert set(redaction.secret_values(raw)) == {*SIGNED_SECRETS, "bob:hunter2pw"}
    text = json.dumps(redaction.redact(raw))
    assert plain in text
    for secret in SIGNED_SECRETS:
        assert secret not in text


def test_url_encoded_secrets_are_found_in_both_forms() -> None:
    url = "https://u%2Bx:p%40ss%2Fw0rd@h.example/?sig=abc%2Bcde%3D%3D&token=a+b+c+d+e&q=a+b"
    found = set(redaction.secret_values({"u": url}))
    assert {
        "p%40ss%2Fw0rd",
        "p@ss/w0rd",
        "abc%2Bcde%3D%3D",
        "abc+cde==",
        "a+b+c+d+e",
        "a b c d e",
    } <= found
    assert redaction.redact(url) == (
        "https://u%2Bx:[redacted]@h.example/?sig=[redacted]&token=[redacted]&q=a+b"
    )
    error = f"GET {url} failed: login p@ss/w0rd refused, signature abc+cde== expired"
    scrubbed = redaction.scrub(error, found)
    for secret in ("p@ss/w0rd", "p%40ss", "abc+cde==", "abc%2Bcde", "a+b+c+d+e"):
        assert secret not in scrubbed
    assert "h.example" in scrubbed


def test_an_error_quoting_a_url_is_scrubbed() -> None:
    secrets = redaction.secret_values(_url_job({"type": "url", "url": SIGNED}))
    for text in (f"fetch failed: 403 for {SIGNED}", f'{{"url": {json.dumps(SIGNED)}}}'):
        scrubbed = redaction.scrub(text, secrets)
        assert "host.example/path" in scrubbed and "page=2" in scrubbed
        for secret in SIGNED_SECRETS:
            assert secret not in scrubbed


def test_a_bare_user_is_a_token_and_short_values_are_not_collected() -> None:
    """`https://TOKEN@github.com/...` passes a token as the user name. Short values are
    redacted from views but not collected for scrubbing: `?key=news`, `?auth=true` or
    `ftp://anonymous@` would otherwise blank those words out of every message and result
    of the job."""
    url = "https://ghp_abc123token4567890@github.com/o/r.git"
    assert redaction.secret_values({"u": url}) == ["ghp_abc123token4567890"]
    assert redaction.redact(url) == "https://[redacted]@github.com/o/r.git"
    short = "https://u:p@h.example/?sig=abc&key="
    assert redaction.secret_values({"u": short}) == []
    assert redaction.redact(short) == "https://u:[redacted]@h.example/?sig=[redacted]&key="
    words = ["https://h.example/?key=news&auth=true", "ftp://anonymous@files.example/"]
    assert redaction.secret_values({"u": words}) == []
    result = {"title": "news about true crime", "fetched_by": "anonymous ftp"}
    assert redaction.scrub_value(result, redaction.secret_values({"u": words})) == result


def test_plain_urls_and_other_strings_are_untouched() -> None:
    values = [
        "https://example.com/search?q=token&page=2&id=12345&lang=en",
        "https://example.com/a@b?x=y",  # an @ in the path is no user
        "http://[::1/",  # malformed: the worker refuses it, nothing to find
        "see https://bob:hunter2pw@host.example for details",  # text, not a URL
        "no url here",
        "",
    ]
    for value in values:
        assert redaction.redact(value) is value
        assert redaction.secret_values({"v": value}) == []
        assert worker_job.secret_values({"v": value}, worker_job.SecretKeys()) == []


def test_worker_and_daemon_find_the_same_url_secrets() -> None:
    assert worker_job.URL_SECRET_PARAMS == redaction.URL_SECRET_PARAMS
    assert worker_job.URL_SECRET_PARAM_SUFFIXES == redaction.URL_SECRET_PARAM_SUFFIXES
    assert worker_job.MIN_URL_SECRET_CHARS == redaction.MIN_URL_SECRET_CHARS
    assert worker_job.MIN_URL_USER_TOKEN_CHARS == redaction.MIN_URL_USER_TOKEN_CHARS
    raw = _url_job(
        {
            "type": "crawl",
            "urls": [SIGNED, "https://t0ken-xyz-0123456789@h.example/", "https://x/?q=1"],
        },
        metadata={
            "a": ["https://u:p%40ss%2Fw0rd@h.example/?sig=abc%2Bcde%3D%3D&token=a+b+c+d+e"],
            "house_pin": "https://h.example/?house_pin=98765432",
            "ok": "https://h.example/?house-pin=54321098",
        },
    )
    keys = ["house-pin"]
    daemon = redaction.secret_values(
        raw, redaction.SecretKeys([*redaction.DEFAULT_SECRET_KEYS, *keys])
    )
    worker = worker_job.secret_values(raw, worker_job.SecretKeys(",".join(keys)))
    assert set(worker) == set(daemon)
    assert {
        "hunter2pw",
        "t0ken-xyz-0123456789",
        "p@ss/w0rd",
        "54321098",
        "98765432",
    } <= set(worker)
    job = worker_job.Job(raw, {"INGEST_SECRET_KEYS": "house-pin"})
    scrubbed = job.scrub(f"GET {SIGNED}: 403")
    assert "host.example/path" in scrubbed
    for secret in SIGNED_SECRETS:
        assert secret not in scrubbed


def test_a_thousand_plain_urls_are_accepted_and_cheap() -> None:
    urls = [f"https://example.com/docs/{i}?page={i}&q=canal&lang=en" for i in range(1000)]
    raw = _url_job({"type": "crawl", "urls": urls, "crawl_depth": 1})
    started = time.perf_counter()
    payload.validate_payload(raw)
    shown = redaction.redact(raw)
    assert redaction.secret_values(raw) == []
    assert worker_job.secret_values(raw, worker_job.SecretKeys()) == []
    assert time.perf_counter() - started < 0.5
    assert shown["data_source"]["urls"] == urls
    # A thousand URLs with the same credentials hold few distinct secrets.
    same = _url_job({"type": "crawl", "urls": [f"{SIGNED}&n={i}" for i in range(1000)]})
    payload.validate_payload(same)


def test_url_secrets_count_towards_the_bound() -> None:
    limit = payload.MAX_SECRET_VALUES
    urls = [f"https://h.example/{i}?sig=signature-{i:05d}" for i in range(limit + 1)]
    with pytest.raises(payload.PayloadError, match="secret-named keys or credentials in URLs"):
        payload.validate_payload(_url_job({"type": "crawl", "urls": urls}))
    payload.validate_payload(_url_job({"type": "crawl", "urls": urls[:limit]}))


def test_a_result_holding_every_separator_candidate_is_still_scrubbed_in_one_pass() -> None:
    """A child cannot force the slow path by putting every control and private-use
    character in one of its strings."""
    poison = "".join(chr(c) for c in (*range(1, 32), *range(0xE000, 0xF900)))
    secrets = [f'se cr/\u00e9"t-{i:04d}' for i in range(100)]
    result = {"chunks": ["abcdefgh"] * 100_000, "poison": poison, "s": f"x {secrets[3]} y"}
    started = time.perf_counter()
    scrubbed = redaction.scrub_value(result, secrets)
    elapsed = time.perf_counter() - started
    assert scrubbed["s"] == f"x {redaction.REDACTED} y"
    assert scrubbed["poison"] == poison and scrubbed["chunks"] == result["chunks"]
    assert elapsed < 1.0, elapsed


async def test_scrubbing_a_large_result_against_many_secrets_leaves_the_event_loop_free() -> None:
    """A payload may name hundreds of secrets (six forms each) and a child may print a
    1 MiB result of short strings: scrubbing one against the other is a second of CPU, which
    the event loop every slot shares must not spend."""
    import dataclasses

    from supervisor.execution import scrubbed_result
    from supervisor.runner import ChildOutcome, EndReason

    secrets = [f"secret-value-number-{n:04d}/+ %" for n in range(300)]
    outcome = ChildOutcome(
        ended=EndReason.EXITED,
        exit_code=0,
        signal=None,
        wall_s=1.0,
        cpu_s=1.0,
        peak_rss_bytes=0,
        progress=100.0,
        progress_message=None,
        result=[f"s{n}" for n in range(150_000)] + [secrets[3]],
        error=None,
    )
    loop_cpu, all_cpu = time.thread_time(), time.process_time()
    result = await scrubbed_result(outcome, secrets)
    loop_cpu, all_cpu = time.thread_time() - loop_cpu, time.process_time() - all_cpu
    assert result[-1] == redaction.REDACTED and result[:2] == ["s0", "s1"]
    assert all_cpu > 0.1, all_cpu  # the work was heavy enough to tell
    assert loop_cpu < all_cpu / 5, (loop_cpu, all_cpu)
    # Nothing to scrub: the same values, no thread needed.
    plain = dataclasses.replace(outcome, result={"chunks": 3})
    assert await scrubbed_result(plain, []) == {"chunks": 3}


def test_a_piece_cut_through_a_secret_keeps_no_part_of_it() -> None:
    secret = "s3cr3t-" + "k" * 40
    text = f"before {secret} middle {secret} after"
    for cut in range(1, len(text)):
        head, tail = text[:cut], text[cut:]
        for piece, kept in (
            (redaction.scrub_piece(head, [secret], cut_end=True), head),
            (redaction.scrub_piece(tail, [secret], cut_start=True), tail),
        ):
            assert not [i for i in range(len(secret) - 3) if secret[i : i + 4] in piece], piece
            assert len(piece) <= len(kept)
    # A short secret inside the part a cut left of a long one: each stands as one
    # character while the cut end is trimmed, so the part is still within reach.
    long, short = "PIN1PIN1PIN1PIN1SECRETSUFFIX99", "PIN1"
    text2 = f"x {long} key={short} y {long} z"
    for cut in range(1, len(text2)):
        for piece in (
            redaction.scrub_piece(text2[:cut], [long, short], cut_end=True),
            redaction.scrub_piece(text2[cut:], [long, short], cut_start=True),
        ):
            assert not [i for i in range(len(long) - 3) if long[i : i + 4] in piece], piece
    whole = redaction.scrub_piece(text, [secret])
    assert whole == f"before {redaction.REDACTED} middle {redaction.REDACTED} after"
    assert redaction.scrub_piece(text, [], cut_start=True, cut_end=True) == text
    # Room for the longest form of a secret around a cut.
    assert redaction.piece_room([secret], 100) == 100 + len(secret)
    assert redaction.piece_room([], 100) == 100


def test_a_secret_stored_as_a_list_an_object_or_a_number_is_a_secret_all_through() -> None:
    raw = {
        "metadata": {
            "api_key": ["sk-list-secret-1", "sk-list-secret-2"],
            "credentials": {"user": "bob-the-user", "pw": "nested-secret-7777"},
            "password": 987654321,
            "client_secret": 1.5e9,
            "token": [True, None, False],
            "note": "not a secret",
        }
    }
    expected = {
        "sk-list-secret-1",
        "sk-list-secret-2",
        "bob-the-user",
        "nested-secret-7777",
        "987654321",
        "1500000000.0",
    }
    assert set(redaction.secret_values(raw)) == expected
    assert set(worker_job.secret_values(raw, worker_job.SecretKeys())) == expected
    text = "failed with sk-list-secret-2 as nested-secret-7777 (pin 987654321)"
    scrubbed = redaction.scrub(text, redaction.secret_values(raw))
    assert not [s for s in expected if s in scrubbed]


def test_short_numbers_and_words_inside_a_secret_value_are_not_scrubbed_everywhere() -> None:
    """A count or a domain stored inside a secret-named object is no secret worth blanking
    out of every message: numbers and nested strings count from 8 characters on."""
    raw = {
        "metadata": {
            "oauth": {"access_token_expires_in": 3600},
            "max_token": 8192,
            "credentials": {"username": "docs", "domain": "example.com", "pw": "hunter22"},
            "password": "pin1",  # a string stored directly is always a secret
        }
    }
    raw["metadata"]["api_keys"] = ["k-short", "sk-1234"]  # a list of them: each one a secret
    raw["metadata"]["pin_password"] = float("inf")  # no number: "Infinity" is no secret
    expected = {"example.com", "hunter22", "pin1", "k-short", "sk-1234"}
    assert set(redaction.secret_values(raw)) == expected
    assert set(worker_job.secret_values(raw, worker_job.SecretKeys())) == expected
    assert worker_job.MIN_NESTED_SECRET_CHARS == redaction.MIN_NESTED_SECRET_CHARS


def test_secret_keys_remember_a_bounded_number_of_answers() -> None:
    """A SecretKeys remembers its answer per short key (payloads repeat the same few), in
    at most KNOWN_KEYS entries however many distinct keys it meets, and its answers stay
    right: asked twice, before and after the memory fills and is cleared."""
    is_secret = redaction.SecretKeys()
    for _ in range(2):
        assert all(is_secret(name) for name in SECRET_NAMES)
        assert not any(is_secret(name) for name in PLAIN_NAMES)
    for i in range(3 * redaction.KNOWN_KEYS):
        assert not is_secret(f"field_{i}")
        assert len(is_secret._known) <= redaction.KNOWN_KEYS
    long_key = "x" * (redaction.KNOWN_KEY_CHARS + 1) + "_token"
    assert is_secret(long_key) and long_key not in is_secret._known
    assert all(is_secret(name) for name in SECRET_NAMES)
    assert is_secret(1) is False and 1 not in is_secret._known


def test_any_mapping_is_walked_as_an_object() -> None:
    """Mappings other than dicts (a Python producer's own types) are checked, collected
    from and redacted exactly as the same dicts."""
    from types import MappingProxyType

    plain = {
        "job_id": "j",
        "tenant_id": "t",
        "data_source": {"type": "url", "url": "https://u:hunter2secret@h/x", "api_key": "k" * 9},
        "metadata": {"nested": [{"password": "p" * 9}]},
    }
    proxied = MappingProxyType(
        {
            **plain,
            "data_source": MappingProxyType(plain["data_source"]),
            "metadata": MappingProxyType({"nested": [MappingProxyType({"password": "p" * 9})]}),
        }
    )
    assert redaction.secret_values(proxied) == redaction.secret_values(plain)
    assert redaction.redact(proxied) == redaction.redact(plain)
    payload.check_structure(proxied)
    bad = MappingProxyType({**plain, "metadata": MappingProxyType({1: "x"})})
    with pytest.raises(payload.PayloadError, match="keys must be strings"):
        payload.check_structure(bad)


def test_a_number_that_is_a_secret_is_redacted_from_a_result() -> None:
    """A number stored under a secret-named key is a secret as JSON writes it; a child
    that sends it back as a number in its RESULT has it redacted like a string."""
    secrets = redaction.secret_values({"metadata": {"pin_token": 98765432109, "ttl": 3.5}})
    assert secrets == ["98765432109"]
    result = {"n": 98765432109, "s": "98765432109", "other": 98765432108, "flag": True}
    assert redaction.scrub_value(result, secrets) == {
        "n": redaction.REDACTED,
        "s": redaction.REDACTED,
        "other": 98765432108,
        "flag": True,
    }
    assert redaction.scrub_value([1.5e300, 98765432109], secrets) == [1.5e300, redaction.REDACTED]
