"""Heartbeats: a worker is live while its heartbeat is fresh, and gone once it expires."""

from __future__ import annotations

import json
import time

import pytest
from redis.asyncio import Redis

from supervisor.queue.jobqueue import JobQueue
from supervisor.queue.workers import WorkerRegistry

from .conftest import eventually, server_ms


async def test_heartbeats_show_live_workers_until_they_expire(q: JobQueue, client: Redis) -> None:
    reg = WorkerRegistry(client, q.keys)
    assert await reg.live() == []
    # Long enough to be seen live first, on a loaded machine too.
    await reg.beat("short", {"host": "h1", "slots": 2}, ttl_s=2.0)
    await reg.beat("long", {"host": "h2", "slots": 4}, ttl_s=30)
    live = {w["worker_id"]: w for w in await reg.live()}
    assert set(live) == {"short", "long"}
    assert live["short"]["host"] == "h1" and live["long"]["slots"] == 4
    assert isinstance(live["long"]["beat_at"], float)
    assert sorted(w["worker_id"] for w in await q.live_workers()) == ["long", "short"]

    async def live_ids() -> list[str]:
        return [w["worker_id"] for w in await reg.live()]

    await eventually(live_ids, lambda ids: ids == ["long"], timeout_s=15)
    assert await client.exists(q.keys.worker("short")) == 0  # its key expired too

    await reg.beat("long", {"host": "h2", "slots": 4, "running": 1}, ttl_s=30)
    assert [w["running"] for w in await reg.live()] == [1]
    await reg.remove("long")
    assert await reg.live() == []
    assert await client.zcard(q.keys.workers) == 1  # only the expired entry, dropped later


# The test process's own clock, captured before any test skews `time.time`.
_REAL_TIME = time.time
HOUR_S = 3600.0


def skew_clock(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """Make this process's wall clock `seconds` off (negative: behind), as on a skewed host."""
    monkeypatch.setattr(time, "time", lambda: _REAL_TIME() + seconds)


def true_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Give this process its true clock back (the reader on a correct clock)."""
    monkeypatch.setattr(time, "time", _REAL_TIME)


async def test_a_writer_with_a_skewed_clock_is_live_on_the_redis_clock(
    q: JobQueue, client: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Expiry and beat time come from Redis's TIME, not the writing host's clock: a daemon
    a minute (or an hour) behind or two hours ahead is live for a reader on a true clock."""
    reg = WorkerRegistry(client, q.keys)
    for worker_id, skew in (("behind-1m", -60.0), ("behind-1h", -HOUR_S), ("ahead-2h", 2 * HOUR_S)):
        skew_clock(monkeypatch, skew)
        await reg.beat(worker_id, {"host": worker_id, "slots": 2}, ttl_s=30)
    true_clock(monkeypatch)

    before = await server_ms(client)
    live = {w["worker_id"]: w for w in await reg.live()}
    assert set(live) == {"behind-1m", "behind-1h", "ahead-2h"}
    for worker_id, w in live.items():
        # Stamped by the server moments ago, and due to expire 30 s after that.
        assert isinstance(w["beat_at"], float)
        assert before - 5_000 <= w["beat_at"] * 1000 <= before + 1, worker_id
        expires = await client.zscore(q.keys.workers, worker_id)
        assert expires is not None
        assert before + 25_000 <= expires <= before + 30_001, worker_id
        ttl = await client.pttl(q.keys.worker(worker_id))
        assert 25_000 <= ttl <= 30_000


async def test_a_writer_far_ahead_does_not_evict_the_others(
    q: JobQueue, client: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The index is trimmed an hour past expiry on Redis's clock: a daemon two hours ahead
    neither drops the other daemons' live entries nor an entry expired only minutes ago."""
    reg = WorkerRegistry(client, q.keys)
    now = await server_ms(client)
    # Expired 10 minutes and 2 hours ago (by the server): only the second is old enough to go.
    await client.zadd(q.keys.workers, {"gone-10m": now - 600_000, "gone-2h": now - 7_200_000})
    await reg.beat("steady", {"host": "h1", "slots": 2}, ttl_s=30)
    skew_clock(monkeypatch, 2 * HOUR_S)
    await reg.beat("ahead", {"host": "h2", "slots": 2}, ttl_s=30)
    skew_clock(monkeypatch, -2 * HOUR_S)
    await reg.beat("behind", {"host": "h3", "slots": 2}, ttl_s=30)
    true_clock(monkeypatch)

    assert sorted(w["worker_id"] for w in await reg.live()) == ["ahead", "behind", "steady"]
    members = {m.decode() for m in await client.zrange(q.keys.workers, 0, -1)}
    assert members == {"steady", "ahead", "behind", "gone-10m"}


async def test_a_reader_with_a_skewed_clock_judges_on_the_redis_clock(
    q: JobQueue, client: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader (API, ingestctl) whose clock is off still sees the live workers as live and
    the expired ones as gone."""
    reg = WorkerRegistry(client, q.keys)
    await reg.beat("short", {"host": "h1"}, ttl_s=0.3)
    await reg.beat("long", {"host": "h2"}, ttl_s=30)

    skew_clock(monkeypatch, 2 * HOUR_S)
    assert sorted(w["worker_id"] for w in await reg.live()) == ["long", "short"]

    skew_clock(monkeypatch, -HOUR_S)

    async def live_ids() -> list[str]:
        return [w["worker_id"] for w in await reg.live()]

    await eventually(live_ids, lambda ids: ids == ["long"], timeout_s=5)


async def test_heartbeats_stay_readable_across_a_rolling_upgrade(
    q: JobQueue, client: Redis
) -> None:
    """The stored format is unchanged: the key holds the daemon's JSON with `beat_at` in
    seconds, the index scores expiry in ms. So a heartbeat written by an older daemon is
    read, and one written now is what an older reader parses, every field as sent."""
    reg = WorkerRegistry(client, q.keys)
    now = await server_ms(client)
    old = {"host": "old", "slots": 1, "worker_id": "old", "beat_at": now / 1000}
    await client.set(q.keys.worker("old"), json.dumps(old), px=30_000)
    await client.zadd(q.keys.workers, {"old": now + 30_000})

    info = {"host": "néw", "slots": 3, "active": [], "ids": ["a"], "meta": {}, "started": 1.5}
    # A stale `beat_at` in the info is replaced by the server's, never sent twice.
    await reg.beat("new", {**info, "beat_at": 1.0}, ttl_s=30)
    raw = await client.get(q.keys.worker("new"))
    assert raw is not None
    body = json.loads(raw)
    assert raw.count(b'"beat_at"') == 1
    assert body == {**info, "worker_id": "new", "beat_at": body["beat_at"]}
    assert isinstance(body["beat_at"], float) and abs(body["beat_at"] * 1000 - now) < 5_000
    assert {w["worker_id"]: w for w in await reg.live()}["old"] == old
