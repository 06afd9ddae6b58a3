"""JSON through the C accelerator `_json` directly.

`import json` pulls in `re` and with it `enum`: about a third of this package's start-up
for a tiny job, paid thousands of times a second under load. The accelerator parses and
encodes exactly as `json` does (it *is* what `json` uses); `json` is the fallback where the
accelerator is missing or its constructor signature ever changes.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

_WS = " \t\n\r"


class _DecodeContext:
    # The attributes json.scanner.make_scanner reads from a JSONDecoder.
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = float  # NaN, Infinity, -Infinity, accepted as json.loads does
    memo: dict[str, str] = {}


def _reject(obj: object) -> object:
    raise TypeError(f"Object of type {obj.__class__.__name__} is not JSON serializable")


def _build() -> tuple[Callable[[str, int], tuple[Any, int]], Callable[[Any, int], Any]] | None:
    try:
        import _json

        scan = _json.make_scanner(_DecodeContext())  # type: ignore[arg-type]
        encode = _json.make_encoder(
            None, _reject, _json.encode_basestring_ascii, None, ":", ",", False, False, True
        )
    except (ImportError, AttributeError, TypeError):
        return None
    return scan, encode


_C = _build()


def loads(data: bytes | str) -> Any:
    """Parse one JSON document; ValueError on anything json.loads would reject."""
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    if _C is None:
        import json

        return json.loads(text)
    start = len(text) - len(text.lstrip(_WS))
    try:
        value, end = _C[0](text, start)
    except StopIteration:
        raise ValueError("Expecting value") from None
    except Exception:
        # The accelerator builds its error from json.decoder only if that is already
        # imported (else a SystemError): on this rare path let `json` say what is wrong.
        import json

        return json.loads(text)
    if text[end:].strip(_WS):
        raise ValueError("Extra data")
    return value


def dumps(value: Any) -> str:
    """Compact, ASCII-only JSON, as json.dumps(value, separators=(",", ":")) gives."""
    if _C is None:
        import json

        return json.dumps(value, separators=(",", ":"), ensure_ascii=True)
    return "".join(_C[1](value, 0))
