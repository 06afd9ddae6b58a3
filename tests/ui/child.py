"""The browser tests' child: behaviour from the payload's `metadata`.

steps and step_s: PROGRESS lines with a pause before each; stderr: text printed before
exiting with `exit` (default 1); fail_while_exists: a path, the job fails while it exists.
"""

import json
import os
import sys
import time

job = json.loads(sys.stdin.read())
meta = job.get("metadata") or {}
steps = int(meta.get("steps", 4))
for i in range(steps):
    time.sleep(float(meta.get("step_s", 0)))
    print(f"PROGRESS: {(i + 1) * 100 // steps} step {i + 1} of {steps}", flush=True)
gate = meta.get("fail_while_exists")
if "stderr" in meta or (gate and os.path.exists(gate)):
    print(meta.get("stderr", "the gate file is still there"), file=sys.stderr, flush=True)
    sys.exit(int(meta.get("exit", 1)))
print("RESULT: " + json.dumps({"chunks": steps}), flush=True)
