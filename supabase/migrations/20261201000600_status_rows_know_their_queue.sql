-- Status rows learn which queue their job is in.
--
-- Several queues may share the table, and Redis can lose jobs altogether (a restart
-- without persistence, an asynchronous failover) or lose a run it had started (an
-- operator's retry). Only a row that names its queue can be checked against that
-- queue's Redis: the reconciler of a queue marks its rows of jobs Redis no longer has
-- as failed, and brings a row of a run Redis no longer has back to the run it has.
-- Rows written before this migration have no queue and are left alone.
--
-- apply_job_status() takes an optional `queue` in each update and keeps the stored one
-- when the update names none (a writer from before this migration).

-- No check constraint: adding one would scan the whole table under an exclusive lock
-- (queue names are checked by the supervisor: 1-64 of letters, digits and '_.:-').
alter table public.ingestion_jobs add column if not exists queue text;

comment on column public.ingestion_jobs.queue is
    'The queue the job was enqueued in (null for rows written before it was recorded).';

-- The reconciler's look for rows of its queue that still say queued or processing.
create index if not exists ingestion_jobs_queue_active_idx
    on public.ingestion_jobs (queue, job_id)
    where status in ('queued', 'processing');

create or replace function public.apply_job_status(updates jsonb)
returns integer
language plpgsql
security invoker
set search_path = ''
as $$
declare
    u record;
    v_changed integer;
    v_total integer := 0;
begin
    if jsonb_typeof(updates) is distinct from 'array' then
        raise exception 'apply_job_status: updates must be a JSON array'
            using errcode = '22023';
    end if;
    -- (job_id, key) order: concurrent batches lock rows in the same order (no deadlock).
    for u in
        select x.*
        from jsonb_to_recordset(updates) as x(
            job_id text, tenant_id text, status text, progress real,
            progress_message text, attempt integer, max_attempts integer, error text,
            result jsonb, worker_id text, queued_at double precision,
            started_at double precision, finished_at double precision, duration_ms bigint,
            peak_rss_bytes bigint, seq_run double precision, rev bigint,
            replaces_seq_run double precision, replaces_rev bigint, queue text)
        order by 1, coalesce(x.seq_run, 0), coalesce(x.rev, 0)
    loop
        if u.job_id is null or u.tenant_id is null or u.status is null then
            raise exception 'apply_job_status: job_id, tenant_id and status are required'
                using errcode = '22023';
        end if;
        insert into public.ingestion_jobs as j (
            job_id, tenant_id, status, progress, progress_message, attempt, max_attempts,
            error, result, worker_id, queued_at, started_at, finished_at, duration_ms,
            peak_rss_bytes, seq_run, seq_at, rev, queue)
        values (
            u.job_id, u.tenant_id, u.status,
            greatest(0, least(100, coalesce(u.progress, 0))),
            u.progress_message, coalesce(u.attempt, 0), u.max_attempts,
            left(u.error, 1000), u.result, u.worker_id,
            to_timestamp(u.queued_at), to_timestamp(u.started_at), to_timestamp(u.finished_at),
            u.duration_ms, u.peak_rss_bytes, coalesce(u.seq_run, 0), 0, coalesce(u.rev, 0),
            u.queue)
        on conflict (job_id) do update set
            status = excluded.status,
            progress = excluded.progress,
            progress_message = excluded.progress_message,
            attempt = excluded.attempt,
            max_attempts = excluded.max_attempts,
            error = excluded.error,
            result = excluded.result,
            worker_id = excluded.worker_id,
            queued_at = excluded.queued_at,
            started_at = excluded.started_at,
            finished_at = excluded.finished_at,
            duration_ms = excluded.duration_ms,
            peak_rss_bytes = excluded.peak_rss_bytes,
            seq_run = excluded.seq_run,
            seq_at = 0,
            rev = excluded.rev,
            queue = coalesce(excluded.queue, j.queue)
        where j.tenant_id = excluded.tenant_id
          and case
              when u.replaces_rev is null then (excluded.seq_run, excluded.rev) > (j.seq_run, j.rev)
              else (j.seq_run, j.rev) = (u.replaces_seq_run, u.replaces_rev)
          end;
        get diagnostics v_changed = row_count;
        v_total := v_total + v_changed;
    end loop;
    return v_total;
end;
$$;

revoke all on function public.apply_job_status(jsonb) from public;
revoke all on function public.apply_job_status(jsonb) from anon, authenticated;
grant execute on function public.apply_job_status(jsonb) to service_role;
