import sys

sys.stdout.buffer.write(b"PROGRESS: 40 caf\xc3\xa9 \xff\xfe bad\n\xc3\x28 log \x80\n")
sys.stderr.buffer.write(b"\xff\xfe\xfd broken stderr \xc3\n")
sys.exit(1)
