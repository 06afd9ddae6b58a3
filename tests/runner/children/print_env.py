import json
import os
import sys

print("RESULT: " + json.dumps({"env": dict(os.environ), "cwd": os.getcwd(),
                                "stdin": sys.stdin.read()}), flush=True)
