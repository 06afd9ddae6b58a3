"""A grandchild escapes the process group with setsid; argv[1] says what the child does.

stay: the child stays alive. exit [seconds]: the child leaves once the grandchild has run
for a while (0.3 s by default, so a tree sample can notice it), leaving the grandchild
orphaned outside the group, still holding stdout/stderr. quiet: the grandchild
daemonizes properly (stdio on /dev/null) and the child exits at once.
"""
import os
import sys
import time

quiet = sys.argv[1] == "quiet"
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.setsid()
    os.close(r)
    if quiet:
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
    os.write(w, b"x")
    # Unless quiet, stdout/stderr stay open too: a stray holding the pipes.
    time.sleep(3600)
    os._exit(0)
os.read(r, 1)
print(f"PROGRESS: 10 escaped {pid}", flush=True)
if sys.argv[1] in ("exit", "quiet"):
    time.sleep(float(sys.argv[2]) if len(sys.argv) > 2 else (0.0 if quiet else 0.3))
    sys.exit(0)
while True:
    time.sleep(60)
