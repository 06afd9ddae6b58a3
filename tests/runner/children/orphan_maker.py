"""Orphans a grandchild while the child itself keeps running for argv[1] seconds.

An intermediate process starts a grandchild in its own session and exits, so the
grandchild is reparented (to the supervisor, when that is a subreaper) while its job runs.
"""
import os
import sys
import time

r, w = os.pipe()
if os.fork() == 0:  # the intermediate
    pid = os.fork()
    if pid == 0:  # the grandchild
        os.setsid()
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        time.sleep(3600)
        os._exit(0)
    os.write(w, str(pid).encode())
    os._exit(0)
grandchild = int(os.read(r, 32))
os.wait()  # the intermediate
print(f"PROGRESS: 10 orphan {grandchild}", flush=True)
time.sleep(float(sys.argv[1]))
