"""The child's environment: the allowlisted part of the supervisor's (`inherited_env`,
read once per runner config) plus each job's own variables (`job_env`)."""

from __future__ import annotations

import os

import pytest

from supervisor.runner.env import inherited_env, job_env


def child_env(passthrough: tuple[str, ...] = ()) -> dict[str, str]:
    """A child's environment as run_child builds it, from the environment as it is now."""
    return job_env(
        inherited_env(os.environ, passthrough), extra={}, job_id="j", attempt=2, workdir="/w"
    )


def test_inherited_env_reads_the_environment_as_it_is_when_called(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("LC_INGEST_TEST", raising=False)
    assert "LC_INGEST_TEST" not in child_env()
    monkeypatch.setenv("LC_INGEST_TEST", "one")
    assert child_env()["LC_INGEST_TEST"] == "one"
    monkeypatch.setenv("LC_INGEST_TEST", "two")
    assert child_env()["LC_INGEST_TEST"] == "two"
    monkeypatch.delenv("LC_INGEST_TEST")
    assert "LC_INGEST_TEST" not in child_env()


def test_each_child_gets_its_own_dict_and_passthrough_lists_do_not_mix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPERATOR_SETTING", "x")
    first = child_env(("OPERATOR_SETTING",))
    first["MUTATED"] = "1"
    second = child_env(("OPERATOR_SETTING",))
    assert "MUTATED" not in second and second["OPERATOR_SETTING"] == "x"
    assert "OPERATOR_SETTING" not in child_env()
    assert second["INGEST_JOB_ID"] == "j" and second["INGEST_ATTEMPT"] == "2"
    assert second["HOME"] == second["TMPDIR"] == "/w"


def test_python_variables_pass_by_name_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """A host's PYTHON* variables are not all the interpreter's: only named ones pass."""
    monkeypatch.setenv("PYTHONPATH", "/srv/lib")
    monkeypatch.setenv("PYTHONIOENCODING", "utf-8")
    monkeypatch.setenv("PYTHON_EXECUTABLE", "/usr/bin/python3")
    monkeypatch.setenv("PYTHONSTARTUP", "/etc/evil.py")
    monkeypatch.setenv("PYTHONBREAKPOINT", "os.system")
    monkeypatch.setenv("PYTHON_DB_PASSWORD", "hunter2")
    env = child_env()
    assert env["PYTHONPATH"] == "/srv/lib" and env["PYTHONIOENCODING"] == "utf-8"
    for name in ("PYTHON_EXECUTABLE", "PYTHONSTARTUP", "PYTHONBREAKPOINT", "PYTHON_DB_PASSWORD"):
        assert name not in env
    assert child_env(("PYTHON_DB_*",))["PYTHON_DB_PASSWORD"] == "hunter2"  # when named
