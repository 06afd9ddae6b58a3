"""A careless child: quotes its job's secrets in a PROGRESS message and on stderr (plain,
URL-encoded and JSON-encoded, and at the very start of a long stderr tail), then exits 65
or metadata's `exit` (or 0 with metadata succeed=true, quoting them in RESULT too, once as
a key). With metadata `cut` ("progress" or "stderr"), it quotes a long secret where the
daemon must cut the text: across the end of a progress message's limit, or across the
start of the stderr the error is made from. The secret is `trial_token` (top level or in
data_source), else the first item of metadata's `api_key` list, else metadata's `password`.
"""

import json
import sys
from urllib.parse import quote, quote_plus

job = json.loads(sys.stdin.read())
meta = job.get("metadata") or {}
token = job.get("trial_token") or job["data_source"].get("trial_token")
if token is None:  # a secret stored as a list under a secret-named key, or as a number
    token = str(meta["api_key"][0] if "api_key" in meta else meta["password"])
cut = meta.get("cut")
if cut == "progress":
    print(f"PROGRESS: 10 {'p' * 500} {token} done", flush=True)
    sys.exit(1)
if cut == "stderr":
    sys.stderr.write("starting " + "." * 2000 + "\n" + f"config: {token}\n" + "x" * 600 + "\n")
    sys.exit(1)
print(f"PROGRESS: 10 fetching with token {token}", flush=True)
print(f"PROGRESS: 60 still using {token}", flush=True)
if (job.get("metadata") or {}).get("succeed"):
    result = {"note": f"done with {token}", token: "as a key", "q": quote(token)}
    print("RESULT: " + json.dumps(result), flush=True)
    sys.exit(0)
print(f"GET /feed?t={quote_plus(token)} body={json.dumps({'t': token})}", file=sys.stderr)
last = f"request refused for token {token}"
# The error keeps the last 972 characters of stderr after "Worker exited with code 65: ":
# pad so that window begins in the middle of this token.
pad = 972 - len(last) - 1 - (len(token) - len(token) // 2)
print(token + "x" * pad, file=sys.stderr)
print(last, file=sys.stderr)
sys.exit(int((job.get("metadata") or {}).get("exit", 65)))
