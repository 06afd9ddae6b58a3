"""Writes argv[1] bytes to stdout as fast as it can; argv[2] 'lines' or 'raw' (no newline)."""
import os
import sys

total = int(sys.argv[1])
block = (b"x" * 99 + b"\n") * 10486 if sys.argv[2] == "lines" else b"y" * (1024 * 1024)
sent = 0
while sent < total:
    n = os.write(1, block[: total - sent])
    sent += n
os.write(1, b"\nPROGRESS: 100 flooded\n")
