"""Writes `PROGRESS:` lines as fast as the pipe takes them for argv[1] seconds, then says on
stderr how many it wrote and prints argv[2] (a last line, e.g. a RESULT) if given."""

import os
import sys
import time

block = b"PROGRESS: 1\n" * 1000
written = 0
until = time.monotonic() + float(sys.argv[1])
while time.monotonic() < until:
    written += os.write(1, block) // 12
if len(sys.argv) > 2:
    os.write(1, sys.argv[2].encode() + b"\n")
sys.stderr.write(f"wrote {written} lines\n")
