"""The bounded output buffer alone."""

from __future__ import annotations

from supervisor.runner.output import BoundedOutput


def test_small_output_is_kept_whole() -> None:
    out = BoundedOutput(tail_bytes=100, head_bytes=10)
    out.append(b"hello ")
    out.append(b"world")
    assert out.head() + out.tail() == b"hello world"
    assert out.dropped_bytes == 0


def test_head_and_tail_kept_middle_dropped_and_counted() -> None:
    out = BoundedOutput(tail_bytes=10, head_bytes=5)
    for i in range(1000):
        out.append(f"{i:05d}".encode())
    assert out.head() == b"00000"
    assert out.tail() == b"0099800999"
    assert out.total_bytes == 5000
    assert out.dropped_bytes == 5000 - 15
    assert out.kept_bytes == 15


def test_one_huge_chunk_keeps_only_its_end() -> None:
    out = BoundedOutput(tail_bytes=4, head_bytes=0)
    out.append(b"abc")
    out.append(b"0123456789")
    assert out.tail() == b"6789"
    assert out.dropped_bytes == 9


def test_last_spans_head_and_tail() -> None:
    out = BoundedOutput(tail_bytes=100, head_bytes=4)
    out.append(b"abcdefgh")
    assert out.last(6) == b"cdefgh"
