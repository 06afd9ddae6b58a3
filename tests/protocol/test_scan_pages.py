"""Listing pages (`scan_jobs`) read a bounded number of bytes of stored records, whatever
their sizes, and their cursors list every job exactly once."""

from __future__ import annotations

import json
from typing import Any

from redis.asyncio import Redis

from supervisor.queue.jobqueue import JobQueue
from tests.protocol.conftest import QueueFactory, job

KiB = 1024


class CountingRedis(Redis):
    """The real client, noting how many bytes each HMGET of records brought back."""

    hmget_bytes: list[int]

    async def hmget(self, name: Any, keys: Any, *args: Any) -> Any:  # type: ignore[override]
        raws = await super().hmget(name, keys, *args)
        self.hmget_bytes.append(sum(len(r) for r in raws if r is not None))
        return raws


async def _fill(q: JobQueue, client: Redis, sizes: list[int]) -> list[str]:
    """Waiting jobs, in queue order, whose stored records carry results of these sizes."""
    ids = [f"j-{n:03d}" for n in range(len(sizes))]
    for job_id in ids:
        await q.enqueue(job(job_id))
    for job_id, size in zip(ids, sizes, strict=True):
        rec = json.loads(await client.hget(q.keys.jobs, job_id))
        await client.hset(
            q.keys.jobs, job_id, json.dumps({**rec, "result": json.dumps("x" * size)})
        )
    return ids


async def _walk(q: JobQueue, max_bytes: int, **filters: Any) -> list[list[str]]:
    pages, cursor = [], 0
    while True:
        page = await q.scan_jobs(
            "waiting", limit=1000, cursor=cursor, max_bytes=max_bytes, **filters
        )
        pages.append([r.job_id for r in page.jobs])
        if page.next_cursor is None:
            return pages
        assert page.next_cursor > cursor, "a cursor that does not advance"
        cursor = page.next_cursor
        assert len(pages) < 200, "listing never ended"


async def test_small_records_first_do_not_open_the_door_to_a_huge_read(
    redis_url: str, make_queue: QueueFactory
) -> None:
    """Sixteen small records, then big ones: no read of records goes beyond the page's
    bytes by more than one record, and each page reads at least one."""
    client = CountingRedis.from_url(redis_url)
    client.hmget_bytes = []
    try:
        q = make_queue(redis_client=client)
        ids = await _fill(q, client, [10] * 16 + [256 * KiB] * 40)
        budget = 1024 * KiB
        client.hmget_bytes.clear()
        pages = await _walk(q, budget)
        assert [i for p in pages for i in p] == ids
        biggest_record = 256 * KiB + 2 * KiB
        assert max(client.hmget_bytes) <= budget + biggest_record, client.hmget_bytes
        assert all(pages[:-1]), pages  # every page but a last empty one lists something
    finally:
        await client.aclose()


async def test_a_record_bigger_than_the_page_is_still_listed(
    client: Redis, make_queue: QueueFactory
) -> None:
    q = make_queue()
    ids = await _fill(q, client, [300 * KiB, 10, 300 * KiB])
    pages = await _walk(q, 100 * KiB)
    assert [i for p in pages for i in p] == ids
    assert all(len(p) <= 2 for p in pages), pages


async def test_a_tenant_filter_counts_the_records_it_passes_over(
    client: Redis, make_queue: QueueFactory
) -> None:
    q = make_queue()
    ids = await _fill(q, client, [200 * KiB] * 10)
    await q.enqueue(job("mine", tenant_id="tenant-mine"))
    pages = await _walk(q, 500 * KiB, tenant_id="tenant-mine")
    assert len(pages) >= 4, pages
    assert [i for p in pages for i in p] == ["mine"]
    assert ids  # the other tenant's ten jobs were there to pass over
