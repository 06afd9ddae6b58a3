"""A grandchild escapes with setsid and daemonizes, then its main thread exits while
another of its threads runs on: /proc shows it as a zombie (its leader's state) although
it is alive. The child waits until it shows so, reports its pid and exits."""

import ctypes
import os
import threading
import time

r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.setsid()
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    threading.Thread(target=lambda: time.sleep(3600)).start()
    os.write(w, b"x")
    ctypes.CDLL(None).pthread_exit(None)  # only the main thread ends
os.read(r, 1)
while True:
    with open(f"/proc/{pid}/stat", "rb") as fh:
        if fh.read().rsplit(b")", 1)[1].split()[0] == b"Z":
            break
    time.sleep(0.01)
print(f"PROGRESS: 10 escaped {pid}", flush=True)
