"""Leaves a mark in its working directory, as argv[1] says: file, chmod, xattr, spy (a
daemonized process in its own session writes a file there 0.5 s after the child exited),
spy-scrubbed (the same, exec'd with an empty environment) or nothing;
RESULT is the directory and what it found there on arrival."""

import json
import os
import sys
import time

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
spy = None
if how in ("spy", "spy-scrubbed"):
    exec_done, exec_signal = os.pipe()  # both close-on-exec: EOF once the spy has exec'd
    spy = os.fork()
    if spy == 0:
        os.close(exec_done)
        os.setsid()
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        if how == "spy-scrubbed":  # one process, so killing it leaves nothing
            code = (
                "import time; time.sleep(0.5); "
                "open('from-previous-job.txt', 'w').write('written after the job ended')"
            )
            os.execve(sys.executable, [sys.executable, "-S", "-I", "-c", code], {})
        os.close(exec_signal)
        time.sleep(0.5)
        with open("from-previous-job.txt", "w") as fh:
            fh.write("written after the job ended")
        os._exit(0)
    os.close(exec_signal)
    os.read(exec_done, 1)  # scrubbed: the job id is gone from its /proc environ by now
elif how == "sleep":
    print("RESULT: " + json.dumps({"cwd": cwd, "found": found, "spy": spy}), flush=True)
    time.sleep(600)
print("RESULT: " + json.dumps({"cwd": cwd, "found": found, "spy": spy}), flush=True)
