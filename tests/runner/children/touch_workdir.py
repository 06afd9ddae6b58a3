"""Leaves a mark in its working directory, as argv[1] says: file, chmod, xattr or nothing;
RESULT is the directory and what it found there on arrival."""

import json
import os
import sys

cwd = os.getcwd()
found = sorted(os.listdir(cwd))
how = sys.argv[1] if len(sys.argv) > 1 else "nothing"
if how == "file":
    with open("left-behind.txt", "w") as fh:
        fh.write("secret of the previous job")
elif how == "chmod":
    os.chmod(cwd, 0o755)
elif how == "xattr":
    os.setxattr(cwd, "user.ingest-test", b"mark")
elif how == "sleep":
    import time

    print("RESULT: " + json.dumps({"cwd": cwd, "found": found}), flush=True)
    time.sleep(600)
print("RESULT: " + json.dumps({"cwd": cwd, "found": found}), flush=True)
