"""A loopback stand-in for Supabase's PostgREST, for tests: no PostgREST can be installed
on these machines, so this serves exactly the requests our code makes by running the SQL
PostgREST would run on the real local PostgreSQL, and rejects everything else the way
PostgREST does (same status codes, same error JSON shape: code, message, details, hint).

Served:
- `POST /rest/v1/rpc/<fn>` for functions in an allowlist: the JSON object body becomes the
  named arguments (through json_to_record, as PostgREST does); scalar results come back as
  JSON, set/composite results as an array, void as 204.
- `GET /rest/v1/<table>` for tables in an allowlist: `select=` (columns or *), filters
  `col=op.value` (eq, neq, gt, gte, lt, lte, is, in), `order=`, `limit=`, `offset=`.

Every request runs in one transaction as the role named in the JWT (Authorization bearer,
else the `apikey` header), HS256-signed with the stand-in's secret: `SET LOCAL ROLE` plus
the `request.jwt.claims` setting that Supabase's auth.jwt() reads, as PostgREST does.

Use: `url, stop = start_standin(dsn)`, then `acreate_client(url, service_key())`.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import jwt
import psycopg
from psycopg import sql

DEFAULT_JWT_SECRET = "standin-jwt-secret-at-least-32-bytes-long"
DEFAULT_RPCS = frozenset({"apply_job_status", "replace_document_chunks"})
DEFAULT_TABLES = frozenset({"ingestion_jobs", "document_chunks"})
ROLES = frozenset({"anon", "authenticated", "service_role"})
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_OPS = {"eq": "=", "neq": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
_RESERVED = frozenset({"select", "order", "limit", "offset", "columns", "on_conflict"})


def make_jwt(role: str, *, secret: str = DEFAULT_JWT_SECRET, **claims: Any) -> str:
    body = {"role": role, "iat": int(time.time()), "exp": int(time.time()) + 3600, **claims}
    return jwt.encode(body, secret, algorithm="HS256")


def service_key(secret: str = DEFAULT_JWT_SECRET) -> str:
    return make_jwt("service_role", secret=secret)


def anon_key(secret: str = DEFAULT_JWT_SECRET) -> str:
    return make_jwt("anon", secret=secret)


def tenant_token(
    tenant_id: str, *, secret: str = DEFAULT_JWT_SECRET, sub: str | None = None
) -> str:
    """A signed-in user's access token whose app_metadata names their tenant."""
    import uuid

    return make_jwt(
        "authenticated",
        secret=secret,
        sub=sub or str(uuid.uuid4()),
        aud="authenticated",
        app_metadata={"tenant_id": tenant_id},
    )


class PgrstError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"code": code, "details": details, "hint": hint, "message": message}


def _sqlstate_status(state: str, role: str) -> int:
    # PostgREST's mapping of SQLSTATE to HTTP status (the cases that matter here).
    if state == "42501":
        return 401 if role == "anon" else 403
    if state in ("23503", "23505"):
        return 409
    if state in ("42883", "42P01"):
        return 404
    if state[:2] in ("08", "53", "54", "57", "58", "XX"):
        return 503 if state[:2] in ("08", "53") else 500
    if state[:2] in ("22", "23", "42", "P0", "2F", "40"):
        return 400
    return 500


@dataclass
class _Config:
    dsn: str
    secret: str
    rpcs: frozenset[str]
    tables: frozenset[str]
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path) seen


class _Handler(BaseHTTPRequestHandler):
    server_version = "postgrest-standin"
    protocol_version = "HTTP/1.0"  # one request per connection: a stopped server is gone
    cfg: _Config

    def log_message(self, format: str, *args: Any) -> None:
        return

    # -- plumbing --

    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        raw = b"" if status == 204 else json.dumps(body).encode()
        self.send_response(status)
        if status != 204:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(raw)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if raw:
            self.wfile.write(raw)

    def _handle(self, fn: Callable[[], tuple[int, Any, dict[str, str]]]) -> None:
        self.cfg.requests.append((self.command, self.path))
        try:
            status, body, headers = fn()
        except PgrstError as exc:
            status, body, headers = exc.status, exc.body, {}
        except psycopg.OperationalError as exc:
            status, body, headers = (
                503,
                {
                    "code": "PGRST001",
                    "details": str(exc),
                    "hint": None,
                    "message": "Database client error. Retrying the connection.",
                },
                {},
            )
        self._send(status, body, headers)

    def _claims(self) -> dict[str, Any]:
        auth = self.headers.get("Authorization") or ""
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        token = token or (self.headers.get("apikey") or "").strip()
        if not token:
            raise PgrstError(
                401,
                "PGRST302",
                "Anonymous access is disabled",
                hint="No `apikey` request header or url param was found.",
            )
        try:
            claims: dict[str, Any] = jwt.decode(
                token, self.cfg.secret, algorithms=["HS256"], options={"verify_aud": False}
            )
        except jwt.ExpiredSignatureError:
            raise PgrstError(401, "PGRST303", "JWT expired") from None
        except jwt.InvalidTokenError:
            raise PgrstError(401, "PGRST301", "JWSError JWSInvalidSignature") from None
        role = claims.get("role")
        if role not in ROLES:
            raise PgrstError(401, "22023", f'role "{role}" does not exist')
        return claims

    def _transaction(self, claims: dict[str, Any], stmt: sql.Composable, params: list[Any]) -> Any:
        role = str(claims["role"])
        with psycopg.connect(self.cfg.dsn, connect_timeout=5) as conn:
            try:
                with conn.transaction():
                    conn.execute(sql.SQL("set local role {}").format(sql.Identifier(role)))
                    conn.execute(
                        "select set_config('request.jwt.claims', %s, true),"
                        " set_config('request.method', %s, true),"
                        " set_config('request.path', %s, true)",
                        [json.dumps(claims), self.command, urlsplit(self.path).path],
                    )
                    row = conn.execute(stmt, params).fetchone()
                    return None if row is None else row[0]
            except psycopg.OperationalError as exc:
                # Lost connections are PostgREST's PGRST001; an error the query itself
                # raised (a lock timeout, 55P03) comes back with its SQLSTATE.
                if not exc.sqlstate or exc.sqlstate.startswith("08"):
                    raise
                raise PgrstError(
                    _sqlstate_status(exc.sqlstate, role),
                    exc.sqlstate,
                    exc.diag.message_primary or str(exc),
                    exc.diag.message_detail,
                    exc.diag.message_hint,
                ) from None
            except psycopg.Error as exc:
                diag = exc.diag
                state = exc.sqlstate or "XX000"
                raise PgrstError(
                    _sqlstate_status(state, role),
                    state,
                    diag.message_primary or str(exc),
                    diag.message_detail,
                    diag.message_hint,
                ) from None

    def _admin(self, stmt: str, params: list[Any]) -> list[tuple[Any, ...]]:
        """Schema-cache lookups, done as the server's own login role like PostgREST's."""
        with psycopg.connect(self.cfg.dsn, connect_timeout=5, autocommit=True) as conn:
            return conn.execute(stmt, params).fetchall()  # type: ignore[arg-type]

    # -- verbs --

    def do_GET(self) -> None:
        self._handle(self._get)

    def do_POST(self) -> None:
        self._handle(self._post)

    def _reject_method(self) -> tuple[int, Any, dict[str, str]]:
        raise PgrstError(
            405,
            "PGRST117",
            f"Unsupported HTTP method: {self.command}",
            hint="the test stand-in serves only the requests ingest-supervisor makes",
        )

    def _unsupported(self) -> None:
        self._handle(self._reject_method)

    do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _unsupported

    def _route(self) -> tuple[str, str]:
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        if not path.startswith("/rest/v1/"):
            raise PgrstError(404, "PGRST125", "Invalid path specified in request URL")
        return path[len("/rest/v1/") :], parts.query

    def _get(self) -> tuple[int, Any, dict[str, str]]:
        rest, query = self._route()
        if rest.startswith("rpc/"):
            raise PgrstError(
                405,
                "PGRST117",
                "Unsupported HTTP method: GET",
                hint="the test stand-in serves rpc by POST only",
            )
        if "/" in rest or not _IDENT.match(rest) or rest not in self.cfg.tables:
            raise PgrstError(
                404,
                "PGRST205",
                f"Could not find the table 'public.{rest}' in the schema cache",
            )
        accept = self.headers.get("Accept") or ""
        if "vnd.pgrst" in accept:
            raise PgrstError(406, "PGRST107", f"None of these media types are available: {accept}")
        claims = self._claims()
        stmt, params = _select_sql(
            rest, parse_qsl(query, keep_blank_values=True), self._columns(rest)
        )
        rows = self._transaction(claims, stmt, params) or []
        end = f"0-{len(rows) - 1}/*" if rows else "*/*"
        return 200, rows, {"Content-Range": end}

    def _columns(self, table: str) -> set[str]:
        rows = self._admin(
            "select column_name from information_schema.columns"
            " where table_schema = 'public' and table_name = %s",
            [table],
        )
        if not rows:
            raise PgrstError(
                404, "PGRST205", f"Could not find the table 'public.{table}' in the schema cache"
            )
        return {r[0] for r in rows}

    def _post(self) -> tuple[int, Any, dict[str, str]]:
        rest, query = self._route()
        if not rest.startswith("rpc/"):
            raise PgrstError(
                405,
                "PGRST117",
                "Unsupported HTTP method: POST",
                hint="the test stand-in does not serve table writes",
            )
        fn = rest[len("rpc/") :]
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            raise PgrstError(400, "PGRST102", "Empty or invalid json") from None
        if not isinstance(body, dict):
            raise PgrstError(400, "PGRST102", "Invalid body: expected a JSON object of arguments")
        if query:
            raise PgrstError(
                400, "PGRST100", f"the stand-in takes no query parameters on rpc: {query}"
            )
        arg_names = sorted(body)
        signature = f"public.{fn}({', '.join(arg_names)})"
        not_found = PgrstError(
            404,
            "PGRST202",
            f"Could not find the function {signature} in the schema cache",
            hint="Perhaps you meant to call a function with different arguments",
        )
        if fn not in self.cfg.rpcs or not _IDENT.match(fn):
            raise not_found
        fn_info = self._function(fn, arg_names)
        if fn_info is None:
            raise not_found
        arg_types, returns_set, returns_void = fn_info
        claims = self._claims()
        stmt = _rpc_sql(fn, arg_names, arg_types, returns_set, returns_void)
        result = self._transaction(claims, stmt, [json.dumps(body)])
        if returns_void:
            return 204, None, {}
        if returns_set and result is None:
            result = []
        return 200, result, {}

    def _function(self, fn: str, arg_names: list[str]) -> tuple[list[str], bool, bool] | None:
        """The overload whose input argument names are exactly `arg_names`."""
        rows = self._admin(
            """
            select coalesce(p.proargnames[1:p.pronargs], '{}'),
                   array(select format_type(t, null) from unnest(p.proargtypes) t),
                   p.proretset,
                   p.prorettype = 'void'::regtype,
                   t.typtype = 'c' or p.prorettype = 'record'::regtype
            from pg_proc p
            join pg_namespace n on n.oid = p.pronamespace
            join pg_type t on t.oid = p.prorettype
            where n.nspname = 'public' and p.proname = %s
            """,
            [fn],
        )
        for names, types, retset, void, composite in rows:
            if sorted(names) == arg_names:
                by_name = dict(zip(names, types, strict=True))
                return [by_name[n] for n in arg_names], bool(retset or composite), bool(void)
        return None


def _rpc_sql(
    fn: str, names: list[str], types: list[str], returns_set: bool, returns_void: bool
) -> sql.Composable:
    # Types come from pg_catalog's format_type, so they are safe SQL type names.
    record = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t))
        for n, t in zip(names, types, strict=True)
    )
    args = sql.SQL(", ").join(
        sql.SQL("{} := _a.{}").format(sql.Identifier(n), sql.Identifier(n)) for n in names
    )
    call = sql.SQL("public.{}({})").format(sql.Identifier(fn), args)
    source = (
        sql.SQL("from json_to_record(%s::json) as _a({})").format(record)
        if names
        else sql.SQL("from (select %s::json) as _a")
    )
    if returns_void:
        return sql.SQL("select null from (select {} {}) _r").format(call, source)
    if returns_set:
        return sql.SQL(
            "select coalesce(json_agg(_r), '[]'::json) from (select (_c).* from"
            " (select {} as _c {}) _s) _r"
        ).format(call, source)
    return sql.SQL("select to_json({}) {}").format(call, source)


def _select_sql(
    table: str, params: Iterable[tuple[str, str]], columns: set[str]
) -> tuple[sql.Composable, list[Any]]:
    def column(name: str) -> sql.Identifier:
        if not _IDENT.match(name) or name not in columns:
            raise PgrstError(400, "42703", f"column {table}.{name} does not exist")
        return sql.Identifier(name)

    select: sql.Composable = sql.SQL("*")
    where: list[sql.Composable] = []
    order: list[sql.Composable] = []
    values: list[Any] = []
    limit: int | None = None
    offset: int | None = None
    for key, value in params:
        if key == "select":
            if value.strip() in ("", "*"):
                select = sql.SQL("*")
            else:
                select = sql.SQL(", ").join(column(c.strip()) for c in value.split(","))
        elif key == "order":
            for term in value.split(","):
                bits = term.strip().split(".")
                direction = {"asc": "asc", "desc": "desc"}
                nulls = {"nullsfirst": "nulls first", "nullslast": "nulls last"}
                if (
                    not bits
                    or len(bits) > 3
                    or (len(bits) > 1 and bits[1] not in direction)
                    or (len(bits) == 3 and bits[2] not in nulls)
                ):
                    raise PgrstError(400, "PGRST100", f'"failed to parse order ({value})"')
                term_sql: sql.Composable = column(bits[0])
                if len(bits) > 1:
                    term_sql = sql.SQL("{} {}").format(term_sql, sql.SQL(direction[bits[1]]))
                if len(bits) == 3:
                    term_sql = sql.SQL("{} {}").format(term_sql, sql.SQL(nulls[bits[2]]))
                order.append(term_sql)
        elif key in ("limit", "offset"):
            if not value.isdigit():
                raise PgrstError(400, "PGRST100", f'"failed to parse {key} ({value})"')
            if key == "limit":
                limit = int(value)
            else:
                offset = int(value)
        elif key in _RESERVED:
            raise PgrstError(400, "PGRST100", f"the stand-in does not serve '{key}' on reads")
        else:
            op, _, operand = value.partition(".")
            negate = op == "not"
            if negate:
                op, _, operand = operand.partition(".")
            col = column(key)
            if op in _OPS:
                cond: sql.Composable = sql.SQL("{} {} %s").format(col, sql.SQL(_OPS[op]))
                values.append(operand)
            elif op == "is" and operand in ("null", "true", "false"):
                cond = sql.SQL("{} is {}").format(col, sql.SQL(operand))
            elif op == "in" and operand.startswith("(") and operand.endswith(")"):
                items = [i.strip().strip('"') for i in operand[1:-1].split(",") if i.strip()]
                cond = sql.SQL("{} = any(%s)").format(col)
                values.append(items)
            else:
                raise PgrstError(400, "PGRST100", f'"failed to parse filter ({value})"')
            where.append(sql.SQL("not ({})").format(cond) if negate else cond)
    stmt: sql.Composable = sql.SQL("select {} from public.{}").format(select, sql.Identifier(table))
    if where:
        stmt = sql.SQL("{} where {}").format(stmt, sql.SQL(" and ").join(where))
    if order:
        stmt = sql.SQL("{} order by {}").format(stmt, sql.SQL(", ").join(order))
    if limit is not None:
        stmt = sql.SQL("{} limit {}").format(stmt, sql.Literal(limit))
    if offset is not None:
        stmt = sql.SQL("{} offset {}").format(stmt, sql.Literal(offset))
    wrapped = sql.SQL("select coalesce(json_agg(_t), '[]'::json) from ({}) _t").format(stmt)
    return wrapped, values


class StandIn:
    def __init__(
        self,
        dsn: str,
        *,
        secret: str = DEFAULT_JWT_SECRET,
        rpcs: Iterable[str] = DEFAULT_RPCS,
        tables: Iterable[str] = DEFAULT_TABLES,
        port: int = 0,
    ) -> None:
        self.config = _Config(dsn, secret, frozenset(rpcs), frozenset(tables))
        handler = type("StandInHandler", (_Handler,), {"cfg": self.config})
        self._server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self._server.daemon_threads = True
        self.port: int = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def requests(self) -> list[tuple[str, str]]:
        return self.config.requests

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def start_standin(
    dsn: str,
    *,
    secret: str = DEFAULT_JWT_SECRET,
    rpcs: Iterable[str] = DEFAULT_RPCS,
    tables: Iterable[str] = DEFAULT_TABLES,
    port: int = 0,
) -> tuple[str, Callable[[], None]]:
    """Serve on 127.0.0.1 (a free port unless given); returns (base URL, stop)."""
    server = StandIn(dsn, secret=secret, rpcs=rpcs, tables=tables, port=port)
    return server.url, server.stop
