"""Leaves argv[1] daemonized orphans (each in a session of its own, its parent exited at
once, so no tree sample sees it), reports how many, and exits."""

import os
import sys
import time

for _ in range(int(sys.argv[1])):
    pid = os.fork()
    if pid == 0:
        if os.fork() == 0:
            os.setsid()
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            time.sleep(3600)
        os._exit(0)
    os.waitpid(pid, 0)
print(f"PROGRESS: 10 left {sys.argv[1]}", flush=True)
