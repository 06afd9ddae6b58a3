-- document_chunks: take back from anon and authenticated what row level security does not
-- guard.
--
-- Supabase's default privileges grant every table privilege to anon and authenticated. RLS
-- filters SELECT, INSERT, UPDATE and DELETE row by row, but TRUNCATE, REFERENCES and
-- TRIGGER bypass it: with the default grants any holder of the public anon key could
-- TRUNCATE every tenant's chunks. Chunks are written only by the worker (service_role,
-- through replace_document_chunks); web app users may read them through policies a
-- deployment adds, so authenticated keeps SELECT alone and RLS decides which rows it sees.
-- The identity sequence gets the same treatment.

revoke all on table public.document_chunks from public;

do $grants$
declare
    seq text := pg_catalog.pg_get_serial_sequence('public.document_chunks', 'id');
begin
    if exists (select 1 from pg_roles where rolname = 'anon') then
        execute 'revoke all on table public.document_chunks from anon';
        execute format('revoke all on sequence %s from anon', seq);
    end if;
    if exists (select 1 from pg_roles where rolname = 'authenticated') then
        execute 'revoke all on table public.document_chunks from authenticated';
        execute format('revoke all on sequence %s from authenticated', seq);
        execute 'grant select on table public.document_chunks to authenticated';
    end if;
end
$grants$;
