"""Files under the operator's INGEST_FILE_ROOT, never outside it (no `..`, no symlinks out)."""

from __future__ import annotations

import os
import stat
from typing import Any

from ingest_worker.documents import Document, Loaded
from ingest_worker.errors import BadInput, ConfigError, TempFail
from ingest_worker.stages import FETCH_END, FETCH_START

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ingest_worker.config import WorkerConfig
    from ingest_worker.progress import Reporter

EXTENSIONS = (".txt", ".md", ".markdown", ".html", ".htm", ".json", ".pdf")
MAX_FILES = 1000


def load_files(
    source: dict[str, Any], config: WorkerConfig, reporter: Reporter, tenant_id: str
) -> Loaded:
    if not config.file_root:
        raise BadInput("file sources are disabled: the operator has not set INGEST_FILE_ROOT")
    root = os.path.realpath(config.file_root)
    if not os.path.isdir(root):
        raise ConfigError(f"INGEST_FILE_ROOT: {config.file_root!r} is not a directory")
    if config.file_root_per_tenant:
        root = _tenant_root(root, tenant_id)
    paths = _requested_paths(source)
    loaded = Loaded()
    for i, rel in enumerate(paths):
        full = resolve_under(root, rel)
        data = _read(root, full, rel, config.max_file_bytes)
        if loaded.bytes_read + len(data) > config.max_total_bytes:
            raise BadInput(f"files exceed INGEST_MAX_TOTAL_BYTES ({config.max_total_bytes})")
        loaded.bytes_read += len(data)
        text, title = extract_file(rel, data, config)
        meta: dict[str, object] = {"path": rel}
        if title:
            meta["title"] = title
        loaded.documents.append(Document(rel, text, meta))
        reporter.stage(FETCH_START, FETCH_END, i + 1, len(paths), f"read {rel}")
    return loaded


def _tenant_root(root: str, tenant_id: str) -> str:
    """<root>/<tenant id>, the only place that tenant's file sources may read: a real
    directory (not a symlink, which could lead to another tenant's), named by an id that
    is not a dot name (`.`, `..`, or a hidden directory such as `.snapshot`)."""
    if tenant_id.startswith(".") or "/" in tenant_id or "\x00" in tenant_id:
        raise BadInput(f"tenant_id {tenant_id!r} cannot name a directory of INGEST_FILE_ROOT")
    mine = os.path.join(root, tenant_id)
    try:
        is_dir = stat.S_ISDIR(os.lstat(mine).st_mode)
    except OSError:
        is_dir = False
    if not is_dir:
        raise BadInput(f"no files of tenant {tenant_id} under INGEST_FILE_ROOT")
    return mine


def _requested_paths(source: dict[str, Any]) -> list[str]:
    raw = source.get("paths", source.get("path"))
    paths = [raw] if isinstance(raw, str) else raw
    if not isinstance(paths, list) or not paths:
        raise BadInput("data_source.path: is required for a file source (or a list in 'paths')")
    if len(paths) > MAX_FILES:
        raise BadInput(f"data_source.paths: at most {MAX_FILES} files per job")
    for p in paths:
        if not isinstance(p, str) or not p:
            raise BadInput("data_source.paths: every path must be a non-empty string")
    return paths


def resolve_under(root: str, rel: str) -> str:
    """The real path of `rel` inside `root`, or BadInput if it (or a symlink in it) leaves."""
    if "\x00" in rel:
        raise BadInput("data_source.path: must not contain NUL")
    if os.path.isabs(rel) or ".." in rel.replace("\\", "/").split("/"):
        raise BadInput(f"data_source.path: {rel!r} must be relative to the file root, no '..'")
    try:
        full = os.path.realpath(os.path.join(root, rel))
    except OSError as exc:  # a path changing while it is resolved
        raise BadInput(f"data_source.path: {rel!r} cannot be resolved ({exc.strerror})") from None
    if os.path.commonpath([root, full]) != root:
        raise BadInput(f"data_source.path: {rel!r} resolves outside the file root")
    return full


def _read(root: str, full: str, rel: str, max_bytes: int) -> bytes:
    if not full.lower().endswith(EXTENSIONS):
        raise BadInput(f"{rel}: unsupported file type (supported: {', '.join(EXTENSIONS)})")
    try:
        # O_NOFOLLOW: the path was resolved above; a symlink swapped in since is refused.
        # O_NONBLOCK: opening a FIFO would otherwise wait for a writer; it is refused below
        # as not a regular file (regular files ignore the flag).
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(full, flags)
    except FileNotFoundError:
        raise BadInput(f"{rel}: no such file") from None
    except OSError as exc:
        raise BadInput(f"{rel}: cannot be read ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as fh:
        # What was opened, not what was resolved: a directory on the path swapped for a
        # symlink in between (O_NOFOLLOW guards only the last part) led elsewhere.
        try:
            opened = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # no /proc here: at least the file resolved is the one opened
            opened = full if _same_file(fh.fileno(), full) else "/"
        if os.path.commonpath([root, opened]) != root:
            raise BadInput(f"data_source.path: {rel!r} resolves outside the file root")
        st = os.fstat(fh.fileno())
        if not _is_regular(st.st_mode):
            raise BadInput(f"{rel}: not a regular file")
        if st.st_size > max_bytes:
            raise BadInput(f"{rel}: larger than INGEST_MAX_FILE_BYTES ({max_bytes})")
        try:
            data = fh.read(max_bytes + 1)
        except OSError as exc:
            raise TempFail(f"{rel}: read failed ({exc.strerror})") from None
    if len(data) > max_bytes:
        raise BadInput(f"{rel}: larger than INGEST_MAX_FILE_BYTES ({max_bytes})")
    return data


def _same_file(fd: int, path: str) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except OSError:
        return False


def _is_regular(mode: int) -> bool:
    return stat.S_ISREG(mode)


def extract_file(name: str, data: bytes, config: WorkerConfig | None = None) -> tuple[str, str]:
    """(text, title) of a file's bytes, by extension."""
    lower = name.lower()
    if lower.endswith(".pdf"):
        from ingest_worker.sources.pdf import PdfLimits, extract_pdf

        return extract_pdf(name, data, PdfLimits.of(config)), ""
    text = _decode(name, data)
    if lower.endswith((".html", ".htm")):
        from ingest_worker.web.htmltext import extract_html

        page = extract_html(name, text)
        return page.text, page.title
    if lower.endswith(".json"):
        return _json_text(name, text), ""
    return text, ""


def _decode(name: str, data: bytes) -> str:
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadInput(f"{name}: not UTF-8 text") from None


def _json_text(name: str, text: str) -> str:
    """Every string and number in a JSON document, one `key: value` per line."""
    import json

    try:
        doc = json.loads(text)
    except ValueError:
        raise BadInput(f"{name}: not valid JSON") from None
    except RecursionError:
        raise BadInput(f"{name}: JSON nested deeper than Python can read") from None
    lines: list[str] = []
    stack: list[tuple[str, Any]] = [("", doc)]
    while stack:
        key, node = stack.pop()
        if isinstance(node, dict):
            stack.extend((str(k), v) for k, v in reversed(list(node.items())))
        elif isinstance(node, list):
            stack.extend((key, v) for v in reversed(node))
        elif isinstance(node, str | int | float) and not isinstance(node, bool):
            lines.append(f"{key}: {node}" if key else str(node))
    return "\n".join(lines)
