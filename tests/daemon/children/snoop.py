"""A curious child: tries to read its daemon's environment and the credentials directory.

metadata: daemon_pid, cred_dir. Prints one RESULT with what it managed to read (a string
per attempt: the data, or the error's name) and its own uid and capability sets.
"""

import json
import os
import sys

job = json.loads(sys.stdin.read())
meta = job["metadata"]
seen = {}


def attempt(label, read):
    try:
        seen[label] = read()
    except OSError as exc:
        seen[label] = f"error:{type(exc).__name__}"


def read_file(path):
    with open(path, "rb") as fh:
        return fh.read().decode("utf-8", "replace")


attempt("environ", lambda: read_file(f"/proc/{meta['daemon_pid']}/environ"))
attempt("mem_maps", lambda: read_file(f"/proc/{meta['daemon_pid']}/maps")[:200])
cred_dir = meta.get("cred_dir")
if cred_dir:
    attempt("cred_list", lambda: " ".join(sorted(os.listdir(cred_dir))))
    attempt("cred_redis", lambda: read_file(os.path.join(cred_dir, "REDIS_URL")))
status = read_file("/proc/self/status")
caps = {
    line.split(":")[0]: line.split()[1]
    for line in status.splitlines()
    if line.startswith(("CapEff", "CapPrm", "CapAmb"))
}
seen["uid"] = os.getuid()
seen["caps"] = caps
seen["env_names"] = sorted(os.environ)
print("RESULT: " + json.dumps(seen), flush=True)
