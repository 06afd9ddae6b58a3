"""The child runner: spawn one job's child, watch its output, stop it, report how it ended.

Modules, one job each: `config` (settings, default command), `env` (allowlisted
environment), `spawn` (what starting one child takes), `forkserver` (the one way children
start, through the `forkserver_main` process, seen by the daemon as a
`forkserver_process`), `containment` (process tree, orphan sweep:
no descendant outlives its job), `pipes` (non-blocking fds), `protocol` (pure
PROGRESS/RESULT parsing), `output` (bounded head/tail), `coalesce` (progress callbacks),
`stop`, `gate` (start-failure backoff), `oom` (the cgroup's OOM counter), `outcome` (the
record) and `run` (the orchestration).
The child's side of all this is described in docs/child-protocol.md.
"""

from supervisor.runner.config import ResourceLimits, RunnerConfig, default_command
from supervisor.runner.forkserver import FORK_SERVER, ForkServer
from supervisor.runner.gate import StartFailureGate
from supervisor.runner.outcome import ChildOutcome, EndReason
from supervisor.runner.run import run_child
from supervisor.runner.spawn import SpawnSpec
from supervisor.runner.stop import StopRequest

__all__ = [
    "FORK_SERVER",
    "ChildOutcome",
    "EndReason",
    "ForkServer",
    "ResourceLimits",
    "RunnerConfig",
    "SpawnSpec",
    "StartFailureGate",
    "StopRequest",
    "default_command",
    "run_child",
]
