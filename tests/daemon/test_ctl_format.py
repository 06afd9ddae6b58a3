"""ingestctl's human renderings: durations, ages, values, tables."""

from __future__ import annotations

import pytest

from supervisor import ctl_format as fmt


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (0.0, "0ms"),
        (0.85, "850ms"),
        (3.25, "3.2s"),
        (12.4, "12s"),
        (60, "1m"),
        (200, "3m 20s"),
        (7530, "2h 5m"),
        (7200, "2h"),
        (3 * 86400 + 4 * 3600 + 59, "3d 4h"),
        (-5, "0ms"),
    ],
)
def test_duration(seconds: float, shown: str) -> None:
    assert fmt.duration(seconds) == shown


def test_age_past_future_and_nothing() -> None:
    assert fmt.age(100.0, 103.0) == "3.0s ago"
    assert fmt.age(110.0, 100.0) == "in 10s"
    assert fmt.age(None, 100.0) == "-"


def test_values_for_people() -> None:
    assert fmt.text(None) == fmt.text("") == "-"
    assert fmt.text({"pages": 20, "ok": True, "x": None}) == '{"pages": 20, "ok": true, "x": null}'
    assert fmt.text(False) == "no" and fmt.text(0) == "0" and fmt.text(2.5) == "2.5"
    assert fmt.text("a\x1b[2Jb\nc") == "a [2Jb c"
    assert fmt.text("a\x1b[2Jb\nc", one_line=False) == "a?[2Jb\nc"
    assert fmt.dumps({"e": "\x9b\u00e9"}) == '{"e": "\\u009b\\u00e9"}'


def test_table_aligns_columns_and_shows_nothing_as_dash() -> None:
    out = fmt.table(("A", "LONG_HEADER", "C"), [("xxxx", None, "tail"), ("y", 7, None)])
    assert out.splitlines() == [
        "A     LONG_HEADER  C",
        "xxxx  -            tail",
        "y     7            -",
    ]
