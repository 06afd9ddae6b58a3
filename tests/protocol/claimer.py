"""A claimer process for the race and crash tests (run as a script, not collected by pytest).

    claimer.py drain URL QUEUE WORKER   claim+complete until the queue stays empty; prints
                                        `done <id> <1|0>` per job (1: complete() succeeded)
    claimer.py hold URL QUEUE WORKER LEASE_S
                                        claim one job, print `claimed <id> <token>`, then
                                        hang without ever renewing (to be SIGKILLed)

Both print `ready` once connected, before their first claim.
"""

from __future__ import annotations

import asyncio
import sys

from redis.asyncio import Redis

from supervisor.queue.jobqueue import JobQueue

FIRST_CLAIM_TIMEOUT_S = 30.0
IDLE_EXIT_S = 0.5


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def drain(q: JobQueue, worker: str) -> None:
    timeout = FIRST_CLAIM_TIMEOUT_S
    while (claim := await q.claim(worker, lease_s=30, timeout_s=timeout)) is not None:
        timeout = IDLE_EXIT_S
        ok = await q.complete(claim.job.job_id, claim.token, {"by": worker})
        say(f"done {claim.job.job_id} {int(ok)}")


async def hold(q: JobQueue, worker: str, lease_s: float) -> None:
    claim = await q.claim(worker, lease_s=lease_s, timeout_s=FIRST_CLAIM_TIMEOUT_S)
    if claim is None:
        say("nothing")
        return
    say(f"claimed {claim.job.job_id} {claim.token}")
    await asyncio.Event().wait()


async def main(argv: list[str]) -> None:
    mode, url, queue, worker = argv[:4]
    client = Redis.from_url(url)
    try:
        await client.ping()
        q = JobQueue(client, queue)
        say("ready")
        if mode == "drain":
            await drain(q, worker)
        else:
            await hold(q, worker, float(argv[4]))
    finally:
        await client.aclose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
