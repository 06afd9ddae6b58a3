"""Orphans a grandchild while the child itself keeps running for argv[1] seconds.

An intermediate process starts a grandchild in its own session and exits, so the
grandchild is reparented (to the supervisor, when that is a subreaper) while its job runs.
argv[2] 'scrubbed': the grandchild execs `sleep` with an empty environment before it is
orphaned, so nothing in it says which job it came from; 'family': the grandchild has a
child of its own, and the progress message ends with both pids; 'hop': after argv[3]
seconds the grandchild execs `sleep` (same pid) with an environment that names job
`mini-2` instead of its own.
"""

import os
import sys
import time

r, w = os.pipe()
exec_r, exec_w = os.pipe()  # close-on-exec: EOF once the grandchild has exec'd
if os.fork() == 0:  # the intermediate
    pid = os.fork()
    if pid == 0:  # the grandchild
        os.setsid()
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        if sys.argv[2:] == ["scrubbed"]:
            os.execve("/bin/sleep", ["sleep", "3600"], {})
        if sys.argv[2:3] == ["hop"]:
            time.sleep(float(sys.argv[3]))
            forged = {**os.environ, "INGEST_JOB_ID": "mini-2", "INGEST_ATTEMPT": "1"}
            os.execve("/bin/sleep", ["sleep", "3600"], forged)
        if sys.argv[2:] == ["family"]:
            baby = os.fork()
            if baby == 0:
                time.sleep(3600)
                os._exit(0)
            os.write(w, f"{os.getpid()} {baby}".encode())
        time.sleep(3600)
        os._exit(0)
    if sys.argv[2:] == ["scrubbed"]:
        # Orphaned only once scrubbed: a sweep never sees it with its job's environment.
        os.close(exec_w)
        os.read(exec_r, 1)
    if sys.argv[2:3] != ["family"]:
        os.write(w, str(pid).encode())
    os._exit(0)
os.close(exec_w)  # the grandchild's exec alone must end the intermediate's wait
grandchild = os.read(r, 64).decode()
os.wait()  # the intermediate
print(f"PROGRESS: 10 orphan {grandchild}", flush=True)
time.sleep(float(sys.argv[1]))
