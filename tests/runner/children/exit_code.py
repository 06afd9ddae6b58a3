import json
import sys

job = json.loads(sys.stdin.read())
code = int(sys.argv[1])
print("PROGRESS: 100 done", flush=True)
if code == 0:
    print("RESULT: " + json.dumps({"echo": job}), flush=True)
else:
    print(f"failing with {code} for {job['job_id']}", file=sys.stderr)
sys.exit(code)
