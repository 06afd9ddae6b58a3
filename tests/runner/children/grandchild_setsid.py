"""A grandchild escapes the process group with setsid; argv[1] 'stay' keeps the child alive.

With 'exit' the child leaves once the grandchild has been seen for a while (so the runner's
tree sampler can notice it), leaving the grandchild orphaned and outside the group.
"""
import os
import sys
import time

r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.setsid()
    os.close(r)
    os.write(w, b"x")
    # Keep stdout/stderr open too: a stray holding the pipes.
    time.sleep(3600)
    os._exit(0)
os.read(r, 1)
print(f"PROGRESS: 10 escaped {pid}", flush=True)
if sys.argv[1] == "exit":
    time.sleep(float(sys.argv[2]) if len(sys.argv) > 2 else 0.3)
    sys.exit(0)
while True:
    time.sleep(60)
