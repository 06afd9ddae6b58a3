"""The child runner: spawn one job's child, watch its output, stop it, report how it ended.

Modules, one job each: `config` (settings, default command), `env` (allowlisted
environment), `spawner` (fork/exec behind a `Spawner` interface), `pipes` (non-blocking
fds), `protocol` (pure PROGRESS/RESULT parsing), `output` (bounded head/tail), `tree`
(descendants, RSS/CPU, signalling), `coalesce` (progress callbacks), `stop`, `gate`
(start-failure backoff), `outcome` (the record), `workdir` (job directories, reused when
untouched), `orphans` (the subreaper's sweep of escaped descendants), `shim` (the compiled
exec shim), `run` (the orchestration) and `zygote` (the opt-in warm fork server, a second
`Spawner`).
"""

from supervisor.runner.config import ResourceLimits, RunnerConfig, default_command
from supervisor.runner.gate import StartFailureGate
from supervisor.runner.outcome import ChildOutcome, EndReason
from supervisor.runner.run import run_child
from supervisor.runner.spawner import ExecSpawner, Spawner, SpawnSpec
from supervisor.runner.stop import StopRequest
from supervisor.runner.zygote import ZygoteSpawner

__all__ = [
    "ChildOutcome",
    "EndReason",
    "ExecSpawner",
    "ResourceLimits",
    "RunnerConfig",
    "SpawnSpec",
    "Spawner",
    "StartFailureGate",
    "StopRequest",
    "ZygoteSpawner",
    "default_command",
    "run_child",
]
