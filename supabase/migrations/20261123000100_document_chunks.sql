-- document_chunks: the ingest worker's output, one row per chunk of a job's source text.
--
-- The embedding column is pgvector's `vector` (no fixed dimension, so the hash embedder and
-- any sentence-transformers model fit; add a dimension and an index once a deployment picks
-- one model). Where pgvector is not available (a bare local PostgreSQL) the column falls
-- back to real[] so the same migration and the same RPC still apply; Supabase always has it.
--
-- Writes go only through replace_document_chunks(), which replaces all of one job's chunks
-- in the caller's transaction: a retried job never duplicates rows.

do $migration$
declare
    has_vector boolean := exists (select 1 from pg_available_extensions where name = 'vector');
    vector_schema text;
    embedding_type text := 'real[]';
    embedding_expr text;
begin
    if has_vector then
        -- Supabase keeps extensions in their own schema; elsewhere use the default one.
        if exists (select 1 from pg_namespace where nspname = 'extensions') then
            create extension if not exists vector with schema extensions;
        else
            create extension if not exists vector;
        end if;
        select n.nspname into vector_schema
          from pg_extension e join pg_namespace n on n.oid = e.extnamespace
         where e.extname = 'vector';
        embedding_type := format('%I.vector', vector_schema);
    end if;

    execute format($ddl$
        create table if not exists public.document_chunks (
            id          bigint generated always as identity primary key,
            job_id      text        not null check (length(job_id) between 1 and 128),
            tenant_id   text        not null check (length(tenant_id) between 1 and 128),
            chunk_index integer     not null check (chunk_index >= 0),
            source      text        not null,
            content     text        not null,
            embedding   %s          not null,
            metadata    jsonb       not null default '{}'::jsonb,
            created_at  timestamptz not null default now(),
            unique (job_id, chunk_index)
        )$ddl$, embedding_type);

    -- JSON arrays become either type through their text form: '[..]' for vector, '{..}' for
    -- real[].
    if has_vector then
        embedding_expr := format('(c->>''embedding'')::%s', embedding_type);
    else
        embedding_expr := 'translate(c->>''embedding'', ''[]'', ''{}'')::real[]';
    end if;

    execute format($fn$
        create or replace function public.replace_document_chunks(
            p_job_id text, p_tenant_id text, p_chunks jsonb
        ) returns integer
        language plpgsql
        security invoker
        set search_path = ''
        as $body$
        declare
            inserted integer;
        begin
            if p_job_id is null or p_tenant_id is null then
                raise exception 'replace_document_chunks: job id and tenant id are required'
                    using errcode = '22004';
            end if;
            if jsonb_typeof(p_chunks) is distinct from 'array' then
                raise exception 'replace_document_chunks: p_chunks must be a JSON array'
                    using errcode = '22023';
            end if;
            -- Two attempts of one job racing (a zombie after a lost lease) serialise here
            -- instead of failing on the unique key.
            perform pg_catalog.pg_advisory_xact_lock(
                pg_catalog.hashtext('document_chunks:' || p_job_id));
            delete from public.document_chunks where job_id = p_job_id;
            insert into public.document_chunks
                (job_id, tenant_id, chunk_index, source, content, embedding, metadata)
            select p_job_id, p_tenant_id, (c->>'chunk_index')::integer, c->>'source',
                   c->>'content', %s, coalesce(c->'metadata', '{}'::jsonb)
              from pg_catalog.jsonb_array_elements(p_chunks) as c;
            get diagnostics inserted = row_count;
            return inserted;
        end
        $body$
    $fn$, embedding_expr);
end
$migration$;

create index if not exists document_chunks_tenant_idx on public.document_chunks (tenant_id);

-- Rows are tenant data: nothing is readable through the anon or authenticated roles until
-- a deployment adds its own policies; the service role (the worker) bypasses RLS.
alter table public.document_chunks enable row level security;

revoke all on function public.replace_document_chunks(text, text, jsonb) from public;

do $grants$
begin
    if exists (select 1 from pg_roles where rolname = 'anon') then
        execute 'revoke all on function public.replace_document_chunks(text, text, jsonb) from anon';
    end if;
    if exists (select 1 from pg_roles where rolname = 'authenticated') then
        execute 'revoke all on function public.replace_document_chunks(text, text, jsonb) '
                'from authenticated';
    end if;
    if exists (select 1 from pg_roles where rolname = 'service_role') then
        execute 'grant execute on function public.replace_document_chunks(text, text, jsonb) '
                'to service_role';
        execute 'grant select, insert, delete on public.document_chunks to service_role';
    end if;
end
$grants$;
