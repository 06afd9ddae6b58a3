-- document_chunks: chunks belong to (tenant, job), not to a job id alone.
--
-- Job ids are chosen by producers, so two tenants can use the same one. Before this
-- migration replace_document_chunks() deleted every chunk of a job id whatever its tenant,
-- and the unique key (job_id, chunk_index) made the second tenant's insert fail. Now the
-- unique key, the delete and the lock are scoped by tenant: a tenant's job replaces only
-- its own chunks.

alter table public.document_chunks
    drop constraint if exists document_chunks_job_id_chunk_index_key;

do $key$
begin
    if not exists (
        select 1 from pg_constraint
         where conname = 'document_chunks_tenant_job_chunk_key'
           and conrelid = 'public.document_chunks'::regclass
    ) then
        alter table public.document_chunks
            add constraint document_chunks_tenant_job_chunk_key
            unique (tenant_id, job_id, chunk_index);
    end if;
end
$key$;

-- The function is recreated with the same signature; the embedding expression depends on
-- the column's type (pgvector's vector or the real[] fallback), read from the catalog.
do $migration$
declare
    embedding_type text;
    embedding_expr text;
begin
    select format_type(a.atttypid, a.atttypmod) into embedding_type
      from pg_attribute a
     where a.attrelid = 'public.document_chunks'::regclass
       and a.attname = 'embedding'
       and not a.attisdropped;
    if embedding_type = 'real[]' then
        embedding_expr := 'translate(c->>''embedding'', ''[]'', ''{}'')::real[]';
    else
        select format('%I.vector', n.nspname) into embedding_type
          from pg_extension e join pg_namespace n on n.oid = e.extnamespace
         where e.extname = 'vector';
        embedding_expr := format('(c->>''embedding'')::%s', embedding_type);
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
                pg_catalog.hashtext('document_chunks:' || p_tenant_id || ':' || p_job_id));
            delete from public.document_chunks
             where tenant_id = p_tenant_id and job_id = p_job_id;
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

-- create or replace keeps the function's grants; restated so this file stands alone.
revoke all on function public.replace_document_chunks(text, text, jsonb) from public;
