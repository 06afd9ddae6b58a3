-- ingestion_jobs: one row per job, the status a web app reads (and subscribes to).
--
-- Written only by the backend (service role) through public.apply_job_status(updates),
-- which applies a batch of changes monotonically. Every change carries an ordering key
--   (seq_run, final?, attempt, seq_at)
-- compared as a row value; a change whose key is not greater than the stored one is ignored,
-- so an older attempt, a late progress update or a replay never overwrites a newer or
-- final state:
--   seq_run  the job's enqueue time as the queue records it (a manual retry or a re-enqueue
--            after purge starts a new run); 0 for rows written by producers at enqueue,
--            whose clocks we do not trust to order against the queue's;
--   final?   completed / failed / cancelled outrank everything else of the same run;
--   attempt  a later attempt outranks an earlier one;
--   seq_at   event time (unix seconds) orders changes within one attempt.
-- Signed-in users read only their tenant's rows (tenant from the JWT); nobody but the
-- service role writes.

create table if not exists public.ingestion_jobs (
    job_id           text primary key
                     check (job_id ~ '^[A-Za-z0-9_.:-]{1,128}$'),
    tenant_id        text not null,
    status           text not null
                     check (status in ('queued', 'processing', 'completed', 'failed', 'cancelled')),
    progress         real not null default 0
                     check (progress >= 0 and progress <= 100),
    progress_message text,
    attempt          integer not null default 0 check (attempt >= 0),
    max_attempts     integer check (max_attempts >= 1),
    error            text check (char_length(error) <= 1000),
    result           jsonb,
    worker_id        text,
    queued_at        timestamptz,
    started_at       timestamptz,
    finished_at      timestamptz,
    duration_ms      bigint check (duration_ms >= 0),
    peak_rss_bytes   bigint check (peak_rss_bytes >= 0),
    created_at       timestamptz not null default now(),
    updated_at       timestamptz not null default now(),
    seq_run          double precision not null default 0,
    seq_at           double precision not null default 0
);

comment on table public.ingestion_jobs is
    'Status of ingestion jobs, written by ingest-supervisor; see apply_job_status().';
comment on column public.ingestion_jobs.seq_run is
    'Ordering key, part 1: enqueue time of the run (0 for producer-written queued rows).';
comment on column public.ingestion_jobs.seq_at is
    'Ordering key, last part: event time in unix seconds within one attempt.';

-- The web app's queries: a tenant's jobs by status, newest first; recently changed jobs;
-- jobs that may be stuck (queued/processing and not updated for a while).
create index if not exists ingestion_jobs_tenant_status_idx
    on public.ingestion_jobs (tenant_id, status, updated_at desc);
create index if not exists ingestion_jobs_tenant_updated_idx
    on public.ingestion_jobs (tenant_id, updated_at desc);
create index if not exists ingestion_jobs_updated_at_idx
    on public.ingestion_jobs (updated_at);
create index if not exists ingestion_jobs_active_idx
    on public.ingestion_jobs (updated_at)
    where status in ('queued', 'processing');

create or replace function public.ingestion_jobs_touch()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
    new.updated_at := now();
    return new;
end;
$$;

drop trigger if exists ingestion_jobs_touch on public.ingestion_jobs;
create trigger ingestion_jobs_touch
    before insert or update on public.ingestion_jobs
    for each row execute function public.ingestion_jobs_touch();

-- Row level security: the service role bypasses it (Supabase gives it BYPASSRLS); the
-- explicit policy below keeps writes working where it does not. Users get a read policy
-- only. The tenant comes from app_metadata (which users cannot edit, unlike
-- user_metadata) or a top-level `tenant_id` claim set by a custom access token hook.
alter table public.ingestion_jobs enable row level security;

drop policy if exists ingestion_jobs_tenant_read on public.ingestion_jobs;
create policy ingestion_jobs_tenant_read on public.ingestion_jobs
    for select
    to authenticated
    using (
        tenant_id = coalesce(
            (select auth.jwt()) -> 'app_metadata' ->> 'tenant_id',
            (select auth.jwt()) ->> 'tenant_id'
        )
    );

drop policy if exists ingestion_jobs_service_all on public.ingestion_jobs;
create policy ingestion_jobs_service_all on public.ingestion_jobs
    for all
    to service_role
    using (true)
    with check (true);

-- Supabase's default privileges grant everything to anon and authenticated; narrow that.
revoke all on table public.ingestion_jobs from anon, authenticated;
grant select on table public.ingestion_jobs to authenticated;
grant select, insert, update, delete on table public.ingestion_jobs to service_role;

-- Apply a batch of status changes (a JSON array of objects; timestamps in unix seconds).
-- Returns how many rows changed. Changes are applied in (job_id, key) order so two
-- writers updating overlapping jobs lock rows in the same order and cannot deadlock;
-- duplicates of one job in a batch are fine (each is compared with what is stored).
create or replace function public.apply_job_status(updates jsonb)
returns integer
language plpgsql
security invoker
set search_path = ''
as $$
declare
    u record;
    v_start boolean;
    v_outcome boolean;
    v_changed integer;
    v_total integer := 0;
begin
    if jsonb_typeof(updates) is distinct from 'array' then
        raise exception 'apply_job_status: updates must be a JSON array'
            using errcode = '22023';
    end if;
    for u in
        select x.*,
               case when x.status in ('completed', 'failed', 'cancelled') then 1 else 0 end
                   as seq_rank
        from jsonb_to_recordset(updates) as x(
            job_id text, tenant_id text, status text, progress real,
            progress_message text, attempt integer, max_attempts integer, error text,
            result jsonb, worker_id text, queued_at double precision,
            started_at double precision, finished_at double precision, duration_ms bigint,
            peak_rss_bytes bigint, seq_run double precision, seq_at double precision)
        order by 1, coalesce(x.seq_run, 0),
                 case when x.status in ('completed', 'failed', 'cancelled') then 1 else 0 end,
                 coalesce(x.attempt, 0), coalesce(x.seq_at, 0)
    loop
        if u.job_id is null or u.tenant_id is null or u.status is null then
            raise exception 'apply_job_status: job_id, tenant_id and status are required'
                using errcode = '22023';
        end if;
        -- A processing change carrying started_at begins an attempt: the previous
        -- attempt's outcome is cleared. A change carrying finished_at is an outcome
        -- (final, or queued again for another attempt) and replaces the outcome columns.
        v_start := u.status = 'processing' and u.started_at is not null;
        v_outcome := u.finished_at is not null;
        insert into public.ingestion_jobs as j (
            job_id, tenant_id, status, progress, progress_message, attempt, max_attempts,
            error, result, worker_id, queued_at, started_at, finished_at, duration_ms,
            peak_rss_bytes, seq_run, seq_at)
        values (
            u.job_id, u.tenant_id, u.status,
            greatest(0, least(100, coalesce(u.progress, 0))),
            u.progress_message, coalesce(u.attempt, 0), u.max_attempts,
            left(u.error, 1000), u.result, u.worker_id,
            to_timestamp(u.queued_at), to_timestamp(u.started_at), to_timestamp(u.finished_at),
            u.duration_ms, u.peak_rss_bytes, coalesce(u.seq_run, 0), coalesce(u.seq_at, 0))
        on conflict (job_id) do update set
            tenant_id = coalesce(u.tenant_id, j.tenant_id),
            status = u.status,
            progress = greatest(0, least(100, coalesce(
                u.progress,
                case when v_start or u.seq_run > j.seq_run then 0 else j.progress end))),
            progress_message = case
                when u.progress_message is not null then u.progress_message
                when v_start or u.seq_run > j.seq_run then null
                else j.progress_message end,
            attempt = coalesce(u.attempt, 0),
            max_attempts = coalesce(u.max_attempts, j.max_attempts),
            error = case
                when v_outcome or u.seq_run > j.seq_run then left(u.error, 1000)
                else coalesce(left(u.error, 1000), j.error) end,
            result = case
                when v_outcome or v_start or u.seq_run > j.seq_run then u.result
                else coalesce(u.result, j.result) end,
            worker_id = coalesce(u.worker_id, j.worker_id),
            queued_at = coalesce(to_timestamp(u.queued_at), j.queued_at),
            started_at = case
                when u.seq_run > j.seq_run then to_timestamp(u.started_at)
                else coalesce(to_timestamp(u.started_at), j.started_at) end,
            finished_at = case
                when v_outcome or v_start or u.seq_run > j.seq_run then to_timestamp(u.finished_at)
                else j.finished_at end,
            duration_ms = case
                when v_outcome or v_start or u.seq_run > j.seq_run then u.duration_ms
                else coalesce(u.duration_ms, j.duration_ms) end,
            peak_rss_bytes = case
                when v_outcome or v_start or u.seq_run > j.seq_run then u.peak_rss_bytes
                else coalesce(u.peak_rss_bytes, j.peak_rss_bytes) end,
            seq_run = coalesce(u.seq_run, 0),
            seq_at = coalesce(u.seq_at, 0)
        where (coalesce(u.seq_run, 0), u.seq_rank, coalesce(u.attempt, 0), coalesce(u.seq_at, 0))
            > (j.seq_run,
               case when j.status in ('completed', 'failed', 'cancelled') then 1 else 0 end,
               j.attempt, j.seq_at);
        get diagnostics v_changed = row_count;
        v_total := v_total + v_changed;
    end loop;
    return v_total;
end;
$$;

revoke all on function public.apply_job_status(jsonb) from public;
revoke all on function public.apply_job_status(jsonb) from anon, authenticated;
grant execute on function public.apply_job_status(jsonb) to service_role;
revoke all on function public.ingestion_jobs_touch() from public, anon, authenticated;

-- Realtime: let a UI subscribe to its jobs' changes (RLS still applies to subscribers).
do $$
begin
    if exists (select 1 from pg_publication where pubname = 'supabase_realtime')
       and not exists (
           select 1 from pg_publication_tables
           where pubname = 'supabase_realtime'
             and schemaname = 'public' and tablename = 'ingestion_jobs')
    then
        execute 'alter publication supabase_realtime add table public.ingestion_jobs';
    end if;
end;
$$;
