"""The shipped supervisord.conf, read as supervisord reads it (without starting anything)."""

from __future__ import annotations

import configparser
import re

from supervisor.daemon import SETTLE_AFTER_KILL_S
from supervisor.settings import OPTIONS
from supervisor.stop_tail import STOP_TAIL_S

from .pool import CONF
from .units import REPO_ROOT


def _conf() -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser()
    parser.read(CONF)
    return parser


def _default(env: str) -> float:
    return float(next(o.default for o in OPTIONS if o.env == env))


def test_pool_program() -> None:
    prog = _conf()["program:ingest-supervisor"]
    assert prog["numprocs"] == "%(ENV_INGEST_NUMPROCS)s"
    assert prog["process_name"] == "%(program_name)s_%(process_num)02d"
    assert 'INGEST_INSTANCE="%(process_num)d"' in prog["environment"]
    assert prog["command"] == "%(ENV_INGEST_VENV)s/bin/ingest-supervisor"
    assert prog["stopsignal"] == "TERM"
    assert prog["stopasgroup"] == "false"
    assert prog["killasgroup"] == "true"
    assert prog["autorestart"] == "true"
    assert prog["stdout_logfile_maxbytes"] and prog["stdout_logfile_backups"]
    drain = (
        _default("INGEST_SHUTDOWN_GRACE_SECONDS")
        + _default("INGEST_KILL_GRACE_SECONDS")
        + SETTLE_AFTER_KILL_S
        + STOP_TAIL_S
    )
    assert int(prog["stopwaitsecs"]) >= drain + 10


def test_api_program() -> None:
    prog = _conf()["program:ingest-api"]
    assert prog["command"] == "%(ENV_INGEST_VENV)s/bin/ingest-api"
    assert prog["killasgroup"] == "true"
    assert prog["stdout_logfile_maxbytes"]


def test_every_location_comes_from_the_environment() -> None:
    conf = _conf()
    assert conf["unix_http_server"]["file"].startswith("%(ENV_INGEST_RUN_DIR)s/")
    assert conf["supervisord"]["pidfile"].startswith("%(ENV_INGEST_RUN_DIR)s/")
    assert conf["supervisord"]["logfile"].startswith("%(ENV_INGEST_LOG_DIR)s/")
    assert conf["supervisorctl"]["serverurl"] == "unix://%(ENV_INGEST_RUN_DIR)s/supervisor.sock"


def test_every_variable_the_file_needs_is_documented() -> None:
    text = CONF.read_text()
    body = "\n".join(line for line in text.splitlines() if not line.startswith(";"))
    needed = set(re.findall(r"%\(ENV_([A-Z0-9_]+)\)s", body))
    assert needed == {
        "INGEST_VENV",
        "INGEST_NUMPROCS",
        "INGEST_USER",
        "INGEST_RUN_DIR",
        "INGEST_LOG_DIR",
        "INGEST_STATE_DIR",
    }
    header = "\n".join(line for line in text.splitlines() if line.startswith(";"))
    guide = (REPO_ROOT / "docs" / "deployment.md").read_text()
    for name in needed:
        assert name in header, name
        assert f"{name}=" in guide, name
