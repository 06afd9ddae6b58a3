"""A careless child: quotes its job's secrets in a PROGRESS message and on stderr, then
exits 65 (or 0 with metadata succeed=true, quoting them in RESULT too)."""

import json
import sys

job = json.loads(sys.stdin.read())
token = job["data_source"]["trial_token"]
print(f"PROGRESS: 10 fetching with token {token}", flush=True)
print(f"PROGRESS: 60 still using {token}", flush=True)
if (job.get("metadata") or {}).get("succeed"):
    print("RESULT: " + json.dumps({"note": f"done with {token}"}), flush=True)
    sys.exit(0)
print(f"request refused for token {token}", file=sys.stderr)
sys.exit(65)
