"""A 10 MB single line, a PROGRESS line with a 10 MB message, then a normal PROGRESS line."""
import os

os.write(1, b"z" * 10_000_000 + b"\n")
os.write(1, b"PROGRESS: 30 " + b"m" * 10_000_000 + b"\n")
os.write(1, b"PROGRESS: 60 after\n")
