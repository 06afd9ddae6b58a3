import signal
import sys
import time

signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("PROGRESS: 5 ignoring TERM", flush=True)
sys.stdin.read()
while True:
    time.sleep(60)
