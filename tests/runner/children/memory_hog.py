"""Allocates argv[1] MiB, touching it, in 16 MiB steps."""
import sys

hoard = []
for _ in range(int(sys.argv[1]) // 16):
    hoard.append(bytearray(16 * 1024 * 1024))
print("PROGRESS: 100 allocated everything", flush=True)
