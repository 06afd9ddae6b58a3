"""Reading systemd unit files the way systemd does, enough for assertions in tests."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SYSTEMD_DIR = REPO_ROOT / "systemd"
INSTALLED_BIN = "/opt/ingest-supervisor/venv/bin"


def unit_directives(path: Path) -> list[tuple[str, str, str]]:
    """(section, key, value) for every directive, in order; repeated keys kept."""
    out: list[tuple[str, str, str]] = []
    section = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, _, value = line.partition("=")
        out.append((section, key.strip(), value.strip()))
    return out


def values(path: Path, section: str, key: str) -> list[str]:
    return [v for s, k, v in unit_directives(path) if s == section and k == key]


def one(path: Path, section: str, key: str) -> str:
    found = values(path, section, key)
    assert len(found) == 1, f"{path.name}: expected one {section}.{key}, found {found}"
    return found[0]


def seconds(value: str) -> float:
    """A systemd time span such as `75`, `75s`, `1min 15s`, `2min`."""
    units = {"ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}
    total = 0.0
    for part in value.split():
        number = part.rstrip("abcdefghijklmnopqrstuvwxyz")
        suffix = part[len(number) :] or "s"
        total += float(number) * units[suffix]
    return total
