-- A status write waits for another session's lock on a row for at most a second.
--
-- A row can be held by a session that has nothing to do with the supervisor (a
-- `select ... for update` left open in the SQL editor, a long migration). A write of it
-- would otherwise wait for as long as that session lives, holding its connection, and,
-- since a whole batch is one transaction, the locks of every other row it already wrote.
-- A request its client gave up on keeps waiting on the server (PostgREST does not cancel
-- it), so each retry would hold one more connection and more rows. After the timeout the
-- write fails (SQLSTATE 55P03) and releases everything, well before the supervisor's own
-- request timeout (5 s by default) gives up on it; the projector writes the other rows
-- and tries the held one again later. Two projectors writing the same row wait for each
-- other far less than that; when one does not, its batch is simply retried.

alter function public.apply_job_status(jsonb) set lock_timeout = '1s';
