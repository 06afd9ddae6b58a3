-- document_chunks: fix the embedding column to one model's dimension.
--
-- The first migration leaves the column without a dimension, so any embedder fits. Once a
-- deployment picks its model, fix the column to that model's size; every write of a vector
-- of another size then fails, and the worker reports it as configuration (exit 78):
--
--     select public.set_document_chunks_dimension(1536);   -- text-embedding-3-small
--     select public.document_chunks_dimension();           -- 1536; null when not fixed
--     select public.set_document_chunks_dimension(null);   -- any size again
--
-- With pgvector the column becomes vector(N) (what an HNSW or IVFFlat index needs); on the
-- real[] fallback a check constraint holds the size. Fixing fails, changing nothing, while
-- rows of another size remain: re-embed or delete them first.

create or replace function public.document_chunks_dimension()
returns integer
language sql
stable
security invoker
set search_path = ''
as $fn$
    select coalesce(
        (select nullif(a.atttypmod, -1)
           from pg_catalog.pg_attribute a
           join pg_catalog.pg_type t on t.oid = a.atttypid
          where a.attrelid = 'public.document_chunks'::regclass
            and a.attname = 'embedding'
            and t.typname = 'vector'),
        (select substring(pg_catalog.pg_get_constraintdef(c.oid) from '=\s*(\d+)')::integer
           from pg_catalog.pg_constraint c
          where c.conrelid = 'public.document_chunks'::regclass
            and c.conname = 'document_chunks_embedding_dimension')
    )
$fn$;

create or replace function public.set_document_chunks_dimension(p_dimensions integer)
returns integer
language plpgsql
security invoker
set search_path = ''
as $fn$
declare
    vector_type text;
begin
    if p_dimensions is not null and (p_dimensions < 1 or p_dimensions > 16000) then
        raise exception 'set_document_chunks_dimension: dimensions must be between 1 and 16000'
            using errcode = '22023';
    end if;
    select format('%I.%I', n.nspname, t.typname) into vector_type
      from pg_catalog.pg_attribute a
      join pg_catalog.pg_type t on t.oid = a.atttypid
      join pg_catalog.pg_namespace n on n.oid = t.typnamespace
     where a.attrelid = 'public.document_chunks'::regclass
       and a.attname = 'embedding'
       and t.typname = 'vector';
    if vector_type is not null then
        execute format(
            'alter table public.document_chunks alter column embedding type %s using embedding::%s',
            vector_type || coalesce(format('(%s)', p_dimensions), ''),
            vector_type || coalesce(format('(%s)', p_dimensions), ''));
    else
        alter table public.document_chunks
            drop constraint if exists document_chunks_embedding_dimension;
        if p_dimensions is not null then
            execute format(
                'alter table public.document_chunks add constraint '
                'document_chunks_embedding_dimension check '
                '(pg_catalog.cardinality(embedding) = %s)', p_dimensions);
        end if;
    end if;
    return public.document_chunks_dimension();
end
$fn$;

-- Schema changes are the owner's: nobody else may call the setter.
revoke all on function public.set_document_chunks_dimension(integer) from public;
grant execute on function public.document_chunks_dimension() to public;
