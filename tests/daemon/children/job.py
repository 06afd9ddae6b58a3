"""A scriptable child for daemon tests; behaviour comes from the payload's `metadata`.

metadata: sleep (seconds, in steps with PROGRESS), linger (seconds of silence after
them), exit (code), fail_until_attempt (exit 75
while INGEST_ATTEMPT < it), ignore_term (bool), escape (bool: leave a daemonized grandchild
in its own session behind), bad_result (bool: exit 0 after a RESULT line that is not JSON),
stop_parent (bool: send SIGSTOP to its parent, the fork server, first), term_pid (send
SIGTERM to this pid, the daemon, just before its RESULT), pause_redis ([url, ms]: pause
that Redis's writes first, so the daemon's write of this outcome waits).
Every start is appended to $TEST_RUN_LOG.
"""

import json
import os
import signal
import sys
import time

job = json.loads(sys.stdin.read())
meta = job.get("metadata") or {}
attempt = int(os.environ["INGEST_ATTEMPT"])
log_path = os.environ.get("TEST_RUN_LOG")
escapee = None
if meta.get("escape"):
    escapee = os.fork()
    if escapee == 0:
        os.setsid()
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        time.sleep(3600)
        os._exit(0)
grandchild = None
if meta.get("grandchild"):  # stays in the job's session and group, pipes closed
    grandchild = os.fork()
    if grandchild == 0:
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        time.sleep(3600)
        os._exit(0)
if meta.get("stop_parent"):
    os.kill(os.getppid(), signal.SIGSTOP)
if log_path:
    with open(log_path, "a") as fh:
        record = {"job_id": job["job_id"], "attempt": attempt, "pid": os.getpid()}
        fh.write(json.dumps({**record, "escapee": escapee, "grandchild": grandchild}) + "\n")
if meta.get("ignore_term"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("PROGRESS: 1 started", flush=True)
sleep = float(meta.get("sleep", 0))
steps = 10
for i in range(steps):
    if sleep:
        time.sleep(sleep / steps)
    print(f"PROGRESS: {(i + 1) * 100 // steps} step {i + 1}", flush=True)
time.sleep(float(meta.get("linger", 0)))  # quiet after the last PROGRESS line
if attempt < int(meta.get("fail_until_attempt", 0)):
    print(f"temporary trouble on attempt {attempt}", file=sys.stderr)
    sys.exit(75)
code = int(meta.get("exit", 0))
if code:
    print(f"failing with {code}", file=sys.stderr)
    sys.exit(code)
if meta.get("bad_result"):
    print("RESULT: {not json", flush=True)
    sys.exit(0)
if meta.get("pause_redis"):
    import redis

    url, ms = meta["pause_redis"]
    redis.Redis.from_url(url).execute_command("CLIENT", "PAUSE", int(ms), "WRITE")
if meta.get("term_pid"):
    os.kill(int(meta["term_pid"]), signal.SIGTERM)
print("RESULT: " + json.dumps({"job_id": job["job_id"], "attempt": attempt}), flush=True)
