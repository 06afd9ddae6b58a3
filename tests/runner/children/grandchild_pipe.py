"""Forks a grandchild that keeps stdout open and sleeps; the child itself exits 0 at once."""
import os
import time

pid = os.fork()
if pid == 0:
    time.sleep(3600)
    os._exit(0)
print(f"PROGRESS: 50 grandchild {pid}", flush=True)
