"""sentence-transformers loading: absent package or weights are configuration (78); a job
never downloads a model unless allowed; loaded weights embed at the model's dimension."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.worker.conftest import Outcome, child_env, make_job, run_worker

STANDIN = Path(__file__).parent / "st_standin"
JOB = make_job({"type": "text", "text": "words about tides and the moon"})


def run_with_standin(cwd: Path, **env: str) -> Outcome:
    # Not -I: the stand-in package comes in through PYTHONPATH.
    proc = subprocess.run(
        [sys.executable, "-m", "ingest_worker"],
        input=json.dumps(JOB).encode(),
        capture_output=True,
        cwd=cwd,
        env=child_env(PYTHONPATH=str(STANDIN), INGEST_JOB_ID="job-1",
                      INGEST_EMBEDDER="sentence-transformers", **env),
        timeout=60,
        check=False,
    )  # fmt: skip
    return Outcome(proc.returncode, proc.stdout.decode(), proc.stderr.decode())


def test_package_not_installed_is_configuration(workdir: Path) -> None:
    out = run_worker(JOB, workdir, INGEST_EMBEDDER="sentence-transformers")
    assert out.code == 78 and "sentence-transformers package is not installed" in out.stderr


def test_absent_weights_are_configuration_and_never_downloaded(
    workdir: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "models"
    cache.mkdir()
    out = run_with_standin(workdir, INGEST_EMBEDDING_CACHE_DIR=str(cache))
    assert out.code == 78, out.stderr
    assert "INGEST_EMBEDDING_MODEL='all-MiniLM-L6-v2'" in out.stderr
    assert "weights not found" in out.stderr and "INGEST_EMBEDDING_ALLOW_DOWNLOAD" in out.stderr
    # Downloads allowed and the hub unreachable: that may pass, so retry later.
    allowed = run_with_standin(
        workdir, INGEST_EMBEDDING_CACHE_DIR=str(cache), INGEST_EMBEDDING_ALLOW_DOWNLOAD="1"
    )
    assert allowed.code == 75 and "could not be loaded" in allowed.stderr


def test_cached_weights_embed_at_the_models_dimension(workdir: Path, tmp_path: Path) -> None:
    model = tmp_path / "models" / "org--tiny"
    model.mkdir(parents=True)
    (model / "config.json").write_text('{"dimension": 12}')
    env = {"INGEST_EMBEDDING_CACHE_DIR": str(tmp_path / "models"),
           "INGEST_EMBEDDING_MODEL": "org/tiny"}  # fmt: skip
    out = run_with_standin(workdir, **env)
    assert out.code == 0, out.stderr
    assert out.result["embedder"] == "st-org/tiny"
    assert out.result["embedding"] == {
        "embedder": "sentence-transformers", "model": "org/tiny", "dimensions": 12,
        "requests": 0,
    }  # fmt: skip
    wrong = run_with_standin(workdir, INGEST_EMBEDDING_DIM="384", **env)
    assert wrong.code == 78 and "INGEST_EMBEDDING_DIM=384" in wrong.stderr
