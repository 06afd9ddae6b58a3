"""The pure protocol scanner and parser, fed bytes directly (no processes)."""

from __future__ import annotations

import json

import pytest

from supervisor.runner.protocol import (
    Progress,
    ProgressState,
    ProtocolLine,
    ProtocolScanner,
    Rejected,
    Result,
    parse_line,
)


def scan(chunks: list[bytes], **kw: int) -> list[ProtocolLine]:
    scanner = ProtocolScanner(**kw)
    out: list[ProtocolLine] = []
    for chunk in chunks:
        out.extend(scanner.feed(chunk))
    return out + scanner.finish()


def test_finds_protocol_lines_among_log_lines() -> None:
    data = b"log\nPROGRESS: 10 a\nmore log PROGRESS: 99 not at start\nRESULT: {}\ntail"
    assert [x.data for x in scan([data])] == [b"PROGRESS: 10 a", b"RESULT: {}"]


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 13])
def test_lines_split_across_any_chunk_boundary_are_joined(size: int) -> None:
    data = b"x\nPROGRESS: 10 one\nPROGRESS: 20 two\nRESULT: [1]\nPROGRE\nRESULTS\nPROGRESS: 30"
    chunks = [data[i : i + size] for i in range(0, len(data), size)]
    assert [x.data for x in scan(chunks)] == [
        b"PROGRESS: 10 one",
        b"PROGRESS: 20 two",
        b"RESULT: [1]",
        b"PROGRESS: 30",
    ]


def test_overlong_progress_line_is_cut_without_buffering_it() -> None:
    scanner = ProtocolScanner(max_line_bytes=100)
    out = scanner.feed(b"PROGRESS: 5 " + b"m" * 1000)
    out += scanner.feed(b"m" * 10_000 + b"\nPROGRESS: 6 next\n")
    assert [(len(x.data), x.truncated) for x in out] == [(100, True), (16, False)]
    assert scanner._pending is None


@pytest.mark.parametrize("size", [1, 7, 1000])
def test_a_line_of_exactly_the_cap_is_whole_and_one_more_byte_is_cut(size: int) -> None:
    fits = b"PROGRESS: 5 " + b"m" * 88  # 100 bytes
    over = b"PROGRESS: 6 " + b"m" * 89  # 101 bytes
    data = fits + b"\n" + over + b"\nPROGRESS: 7\n"
    chunks = [data[i : i + size] for i in range(0, len(data), size)]
    out = scan(chunks, max_line_bytes=100)
    assert [(x.data, x.truncated) for x in out] == [
        (fits, False),
        (over[:100], True),
        (b"PROGRESS: 7", False),
    ]


def test_overlong_result_line_is_reported_cut() -> None:
    out = scan([b"RESULT: " + b"1" * 500 + b"\n"], max_result_bytes=100)
    assert out[0].truncated
    parsed = parse_line(out[0])
    assert isinstance(parsed, Result) and parsed.value is None and "cut" in (parsed.error or "")


def test_flood_without_protocol_lines_keeps_nothing() -> None:
    scanner = ProtocolScanner()
    for _ in range(50):
        assert scanner.feed(b"noise " * 10_000) == []
    assert scanner._pending is None


@pytest.mark.parametrize(
    "line",
    [
        b"PROGRESS: abc",
        b"PROGRESS: 150",
        b"PROGRESS: -5",
        b"PROGRESS: 1e9",
        b"PROGRESS:",
        b"PROGRESS: ",
        b"PROGRESS: nan",
        b"PROGRESS: 100.5",
        b"PROGRESS: +5",
        b"PROGRESS: 5%",
        b"PROGRESS: \xff\xfe",
    ],
)
def test_malformed_progress_is_rejected_not_raised(line: bytes) -> None:
    assert isinstance(parse_line(ProtocolLine(line)), Rejected)


@pytest.mark.parametrize(
    ("line", "pct", "msg"),
    [
        (b"PROGRESS: 0", 0.0, None),
        (b"PROGRESS: 100", 100.0, None),
        (b"PROGRESS: 42.5 chunking   doc 3\r", 42.5, "chunking   doc 3"),
        (b"PROGRESS:7 tight", 7.0, "tight"),
        (b"PROGRESS: 9 caf\xc3\xa9 \xff", 9.0, "caf\u00e9 \ufffd"),
    ],
)
def test_valid_progress(line: bytes, pct: float, msg: str | None) -> None:
    assert parse_line(ProtocolLine(line)) == Progress(pct, msg)


def test_result_json_and_garbage() -> None:
    assert parse_line(ProtocolLine(b'RESULT: {"chunks": 3}')) == Result({"chunks": 3}, None)
    bad = parse_line(ProtocolLine(b"RESULT: {nope"))
    assert isinstance(bad, Result) and bad.value is None and "not valid JSON" in str(bad.error)
    deep = parse_line(ProtocolLine(b"RESULT: " + b"[" * 100_000))
    assert isinstance(deep, Result) and deep.value is None


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
def test_a_result_with_a_number_json_does_not_have_is_malformed(constant: bytes) -> None:
    got = parse_line(ProtocolLine(b'RESULT: {"score": ' + constant + b"}"))
    assert isinstance(got, Result) and got.value is None
    assert "not valid JSON" in str(got.error) and constant.decode() in str(got.error)


@pytest.mark.parametrize("rest", [b"1e999", b'{"score": -1e400}'])
def test_a_result_with_a_number_too_large_for_a_float_is_malformed(rest: bytes) -> None:
    got = parse_line(ProtocolLine(b"RESULT: " + rest))
    assert isinstance(got, Result) and got.value is None and "not valid JSON" in str(got.error)


def test_a_deep_result_with_characters_beyond_the_bmp_is_kept_whole() -> None:
    """json.dumps writes such a character as an escaped surrogate pair: a valid one."""
    value: object = {"title": "ok \U0001f600"}
    for _ in range(31):  # as deep as a result may be
        value = {"n": value}
    got = parse_line(ProtocolLine(b"RESULT: " + json.dumps(value).encode()))
    assert got == Result(value, None)


def test_a_result_not_in_utf8_never_yields_text_utf8_cannot_hold() -> None:
    line = b"RESULT: " + ' {"title": "\ud83d broken"}'.encode("utf-16-le", "surrogatepass")
    got = parse_line(ProtocolLine(line))
    assert isinstance(got, Result)
    json.dumps(got.value, ensure_ascii=False).encode("utf-8")  # raises on a lone surrogate


def test_a_result_nested_deeper_than_a_payload_is_refused_however_deep() -> None:
    """Deep enough for Python's recursion too, and with a lone surrogate to replace."""
    for levels in (33, 900, 100_000):
        deep = b'{"t": "\\ud83d", "n": ' + b"[" * levels + b"]" * levels + b"}"
        got = parse_line(ProtocolLine(b"RESULT: " + deep))
        assert isinstance(got, Result) and got.value is None, levels
        assert got.error is not None and ("nested deeper" in got.error or "JSON" in got.error)


def test_lone_surrogates_in_a_result_become_replacement_characters() -> None:
    line = b'RESULT: {"title": "\\ud83d broken", "\\udc80key": ["ok \\ud83d\\ude00"]}'
    got = parse_line(ProtocolLine(line))
    assert got == Result({"title": "\ufffd broken", "\ufffdkey": ["ok \U0001f600"]}, None)
    raw = parse_line(ProtocolLine(b'RESULT: {"t": "\xed\xa0\xbd x"}'))  # one, UTF-8-encoded
    assert isinstance(raw, Result) and raw.error is None
    assert raw.value["t"].startswith("\ufffd") and raw.value["t"].endswith(" x")


def test_progress_never_goes_backwards() -> None:
    state = ProgressState()
    changed = [state.apply(Progress(float(pct), None)) for pct in [5, 10, 3, 10, 11, 50, 49, 100]]
    state.apply(Rejected("x"))
    assert changed == [True, True, False, False, True, True, False, True]
    assert state.percent == 100
    assert state.rejected == 3  # 3, 49 and the malformed line
    assert state.lines == 9


def test_a_result_as_deep_as_allowed_with_a_lone_surrogate_is_kept_whole_but_that() -> None:
    deepest: object = []
    for _ in range(31):  # the innermost list at depth 32, as deep as a result may be
        deepest = [deepest]
    line = b'RESULT: {"a": "\\udc80", "b": ' + json.dumps(deepest).encode() + b"}"
    got = parse_line(ProtocolLine(line))
    assert isinstance(got, Result) and got.error is None, got
    assert got.value == {"a": "\ufffd", "b": deepest}
