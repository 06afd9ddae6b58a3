"""Reports the resource limits it was started with, as its RESULT."""

import json
import resource
import sys

sys.stdin.read()
limits = {
    name: resource.getrlimit(getattr(resource, name)) for name in ("RLIMIT_AS", "RLIMIT_CPU")
}
print("RESULT: " + json.dumps(limits), flush=True)
