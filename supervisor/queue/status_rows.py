"""The verbs the status projection uses beyond the job lifecycle: re-sending rows to the
status outbox, reading rows without appending, and a light scan of the job hash."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from supervisor.queue.connection import AnyRedis
from supervisor.queue.keys import QueueKeys
from supervisor.queue.records import as_str as _s


class StatusRowVerbs:
    """Mixed into `JobQueue`, which provides the keys and the script runner."""

    client: AnyRedis
    keys: QueueKeys

    async def _run(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        raise NotImplementedError

    async def resend_status(self, job_ids: Sequence[str]) -> int:
        """Append the current status row of each job to the outbox; returns how many."""
        if not job_ids:
            return 0
        k = self.keys
        return int(await self._run("resend_status", [k.jobs, k.status_outbox], list(job_ids)))

    async def status_rows(self, job_ids: Sequence[str]) -> list[dict[str, str]]:
        """The current status row of each known job, as outbox fields (nothing appended)."""
        if not job_ids:
            return []
        raw = await self._run("status_rows", [self.keys.jobs], list(job_ids))
        return [
            {_s(row[i], "replace"): _s(row[i + 1], "replace") for i in range(0, len(row), 2)}
            for row in raw or []
        ]

    async def known_jobs(self, job_ids: Sequence[str]) -> set[str]:
        """Which of these jobs Redis has a record of, readable or not."""
        if not job_ids:
            return set()
        async with self.client.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hexists(self.keys.jobs, job_id)
            flags = await pipe.execute()
        return {j for j, there in zip(job_ids, flags, strict=True) if there}

    async def job_tenants(self, job_ids: Sequence[str]) -> dict[str, str]:
        """The tenant of each of these jobs Redis has a record of ('' for a record no
        script can read); a job it has none of is left out. A hundred per script: each
        record is decoded whole, results included, while Redis serves nobody else."""
        out: dict[str, str] = {}
        for start in range(0, len(job_ids), 100):
            chunk = list(job_ids[start : start + 100])
            raw = await self._run("job_tenants", [self.keys.jobs], chunk)
            for job_id, tenant in zip(chunk, raw, strict=True):
                if tenant is not None:
                    out[job_id] = _s(tenant, "replace")
        return out

    async def status_versions(
        self, cursor: int, count: int
    ) -> tuple[int, list[tuple[str, str, float, int, str, int, float | None]]]:
        """One page of the job hash as (job id, tenant, run in unix seconds, rev, state,
        attempt, claimed at in unix seconds or None), and the next HSCAN cursor (0 when the
        scan is complete)."""
        raw = await self._run("status_versions", [self.keys.jobs], [cursor, count])
        items = [_s(x, "replace") for x in raw[1:]]
        out = [
            (
                items[i],
                items[i + 1],
                float(items[i + 2]) / 1000.0,
                int(items[i + 3]),
                items[i + 4],
                int(items[i + 5]),
                float(items[i + 6]) / 1000.0 or None,
            )
            for i in range(0, len(items), 7)
        ]
        return int(_s(raw[0])), out
