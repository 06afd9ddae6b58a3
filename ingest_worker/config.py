"""Worker settings, read once from INGEST_* environment variables.

The supervisor passes a clean environment to children, with every variable in `ENV_VARS`
on its allowlist (nothing here needs listing in INGEST_CHILD_ENV). Defaults keep a `text`
job cheap: the hash embedder and, unless a store is configured, no chunk store at all.
"""

from __future__ import annotations

from ingest_worker.errors import ConfigError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

STORES = ("auto", "none", "sqlite", "postgres", "supabase")
EMBEDDERS = ("hash", "sentence-transformers", "openai")
OPENAI_DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_MODELS = {"sentence-transformers": "all-MiniLM-L6-v2", "openai": "text-embedding-3-small"}
MiB = 1024 * 1024

# Every variable the worker reads, for the supervisor's allowlist and the docs.
ENV_VARS = (
    "INGEST_FILE_ROOT",
    "INGEST_FILE_ROOT_PER_TENANT",
    "INGEST_CHUNK_SIZE",
    "INGEST_CHUNK_OVERLAP",
    "INGEST_EMBEDDER",
    "INGEST_EMBEDDING_MODEL",
    "INGEST_EMBEDDING_DIM",
    "INGEST_EMBEDDING_BASE_URL",
    "INGEST_EMBEDDING_API_KEY",
    "INGEST_EMBEDDING_API_KEY_FILE",
    "INGEST_EMBEDDING_BATCH_SIZE",
    "INGEST_EMBEDDING_BATCH_TOKENS",
    "INGEST_EMBEDDING_MAX_INPUT_TOKENS",
    "INGEST_EMBEDDING_LONG_INPUT",
    "INGEST_EMBEDDING_TIMEOUT",
    "INGEST_EMBEDDING_RETRY_SECONDS",
    "INGEST_EMBEDDING_CACHE_DIR",
    "INGEST_EMBEDDING_ALLOW_DOWNLOAD",
    "INGEST_CHUNK_STORE",
    "INGEST_CHUNK_SQLITE_PATH",
    "INGEST_CHUNK_DSN",
    "INGEST_CHUNK_SUPABASE_URL",
    "INGEST_CHUNK_SUPABASE_KEY",
    "INGEST_CRAWL_ALLOW_PRIVATE",
    "INGEST_CRAWL_ALLOW_HOSTS",
    "INGEST_CRAWL_MAX_PAGES",
    "INGEST_CRAWL_MAX_DEPTH",
    "INGEST_FETCH_TIMEOUT",
    "INGEST_MAX_PAGE_BYTES",
    "INGEST_MAX_TOTAL_BYTES",
    "INGEST_MAX_FILE_BYTES",
    "INGEST_USER_AGENT",
    "INGEST_SECRET_KEYS",  # read by ingest_worker.job: more payload keys that name secrets
    "INGEST_PDF_MAX_PAGES",
    "INGEST_PDF_CPU_SECONDS",
)


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}: must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise ConfigError(f"{name}: must be between {low} and {high}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}: must be a number, got {raw!r}") from None
    if not low <= value <= high:
        raise ConfigError(f"{name}: must be between {low} and {high}")
    return value


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise ConfigError(f"{name}: must be 0 or 1, got {raw!r}")


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env.get(name, "").strip().lower() or default
    if value not in choices:
        raise ConfigError(f"{name}: must be one of {', '.join(choices)}")
    return value


def _opt(env: Mapping[str, str], name: str) -> str | None:
    return env.get(name, "").strip() or None


class WorkerConfig:
    """Immutable by convention: built once per process by `from_env`."""

    __slots__ = (
        "allow_hosts",
        "allow_private",
        "chunk_overlap",
        "chunk_size",
        "crawl_max_depth",
        "crawl_max_pages",
        "embedder",
        "embedding",
        "embedding_dim",
        "embedding_model",
        "fetch_timeout",
        "file_root",
        "file_root_per_tenant",
        "max_file_bytes",
        "max_page_bytes",
        "max_total_bytes",
        "pdf_cpu_seconds",
        "pdf_max_pages",
        "sqlite_path",
        "store",
        "store_dsn",
        "supabase_key",
        "supabase_url",
        "user_agent",
    )

    def __init__(self, env: Mapping[str, str]) -> None:
        self.file_root = _opt(env, "INGEST_FILE_ROOT")
        # Each tenant reads only under <root>/<tenant id> (tenants that share the root).
        self.file_root_per_tenant = _flag(env, "INGEST_FILE_ROOT_PER_TENANT")
        self.chunk_size = _int(env, "INGEST_CHUNK_SIZE", 1000, 16, 1_000_000)
        self.chunk_overlap = _int(env, "INGEST_CHUNK_OVERLAP", 200, 0, 1_000_000)
        if self.chunk_overlap >= self.chunk_size:
            raise ConfigError("INGEST_CHUNK_OVERLAP: must be smaller than INGEST_CHUNK_SIZE")
        self.embedder = _choice(env, "INGEST_EMBEDDER", "hash", EMBEDDERS)
        self.embedding_model = _opt(env, "INGEST_EMBEDDING_MODEL") or DEFAULT_MODELS.get(
            self.embedder, "hash"
        )
        self.embedding_dim = _int(env, "INGEST_EMBEDDING_DIM", 384, 8, 16384)
        # Settings only the API and sentence-transformers embedders read; checked here so a
        # typo fails every job alike (78), read into one small object so the hash path stays lean.
        self.embedding = EmbeddingSettings(env, self) if self.embedder != "hash" else None
        self.store_dsn = _opt(env, "INGEST_CHUNK_DSN")
        self.supabase_url = _opt(env, "INGEST_CHUNK_SUPABASE_URL")
        self.supabase_key = _opt(env, "INGEST_CHUNK_SUPABASE_KEY")
        self.sqlite_path = _opt(env, "INGEST_CHUNK_SQLITE_PATH")
        if self.sqlite_path and not self.sqlite_path.startswith("/"):
            # A child runs in a fresh temporary directory: a relative file would be lost.
            raise ConfigError("INGEST_CHUNK_SQLITE_PATH: must be an absolute path")
        self.store = self._pick_store(_choice(env, "INGEST_CHUNK_STORE", "auto", STORES))
        self.allow_private = _flag(env, "INGEST_CRAWL_ALLOW_PRIVATE")
        hosts = env.get("INGEST_CRAWL_ALLOW_HOSTS", "").split(",")
        self.allow_hosts = frozenset(h.strip().lower() for h in hosts if h.strip())
        self.crawl_max_pages = _int(env, "INGEST_CRAWL_MAX_PAGES", 50, 1, 100_000)
        self.crawl_max_depth = _int(env, "INGEST_CRAWL_MAX_DEPTH", 3, 0, 100)
        self.fetch_timeout = _float(env, "INGEST_FETCH_TIMEOUT", 10.0, 0.05, 600.0)
        self.max_page_bytes = _int(env, "INGEST_MAX_PAGE_BYTES", 5 * MiB, 1, 1 << 40)
        self.max_total_bytes = _int(env, "INGEST_MAX_TOTAL_BYTES", 50 * MiB, 1, 1 << 40)
        self.max_file_bytes = _int(env, "INGEST_MAX_FILE_BYTES", 50 * MiB, 1, 1 << 40)
        self.user_agent = _opt(env, "INGEST_USER_AGENT") or "ingest-worker/0.1"
        self.pdf_max_pages = _int(env, "INGEST_PDF_MAX_PAGES", 2000, 1, 1_000_000)
        self.pdf_cpu_seconds = _float(env, "INGEST_PDF_CPU_SECONDS", 30.0, 0.1, 86_400.0)

    def _pick_store(self, store: str) -> str:
        """`auto` picks the first configured store: postgres, supabase, sqlite, else none."""
        if store == "auto":
            if self.store_dsn:
                return "postgres"
            if self.supabase_url and self.supabase_key:
                return "supabase"
            return "sqlite" if self.sqlite_path else "none"
        if store == "postgres" and not self.store_dsn:
            raise ConfigError("INGEST_CHUNK_STORE=postgres: needs INGEST_CHUNK_DSN")
        if store == "supabase" and not (self.supabase_url and self.supabase_key):
            raise ConfigError(
                "INGEST_CHUNK_STORE=supabase: needs INGEST_CHUNK_SUPABASE_URL and "
                "INGEST_CHUNK_SUPABASE_KEY"
            )
        if store == "sqlite" and not self.sqlite_path:
            raise ConfigError("INGEST_CHUNK_STORE=sqlite: needs INGEST_CHUNK_SQLITE_PATH")
        return store


class EmbeddingSettings:
    """Settings of the sentence-transformers and OpenAI-protocol embedders.

    The API key itself is not read here: only its sources are recorded, and the embedder
    reads the key when it starts (a file or credential may be rotated between jobs).
    """

    __slots__ = (
        "allow_download",
        "api_key_env",
        "api_key_file",
        "base_url",
        "batch_size",
        "batch_tokens",
        "cache_dir",
        "credentials_dir",
        "dimensions",
        "long_input",
        "max_input_tokens",
        "retry_seconds",
        "timeout",
    )

    def __init__(self, env: Mapping[str, str], config: WorkerConfig) -> None:
        # Unset: the model's own size, and no `dimensions` field in the request.
        explicit = bool(env.get("INGEST_EMBEDDING_DIM", "").strip())
        self.dimensions = config.embedding_dim if explicit else None
        base = _opt(env, "INGEST_EMBEDDING_BASE_URL") or OPENAI_DEFAULT_BASE_URL
        if not base.startswith(("http://", "https://")) or "?" in base or "#" in base:
            raise ConfigError(
                "INGEST_EMBEDDING_BASE_URL: must be an http(s) URL without query, "
                "such as https://api.openai.com/v1"
            )
        self.base_url = base.rstrip("/")
        self.api_key_env = env.get("INGEST_EMBEDDING_API_KEY", "").strip() or None
        self.api_key_file = _opt(env, "INGEST_EMBEDDING_API_KEY_FILE")
        self.credentials_dir = _opt(env, "CREDENTIALS_DIRECTORY")
        self.batch_size = _int(env, "INGEST_EMBEDDING_BATCH_SIZE", 64, 1, 4096)
        self.batch_tokens = _int(env, "INGEST_EMBEDDING_BATCH_TOKENS", 300_000, 16, 10_000_000)
        # One input must fit in one request's budget.
        self.max_input_tokens = min(
            self.batch_tokens,
            _int(env, "INGEST_EMBEDDING_MAX_INPUT_TOKENS", 8191, 16, 1_000_000),
        )
        self.long_input = _choice(
            env, "INGEST_EMBEDDING_LONG_INPUT", "split", ("split", "truncate")
        )
        self.timeout = _float(env, "INGEST_EMBEDDING_TIMEOUT", 60.0, 0.05, 3600.0)
        self.retry_seconds = _float(env, "INGEST_EMBEDDING_RETRY_SECONDS", 60.0, 0.0, 86_400.0)
        self.cache_dir = _opt(env, "INGEST_EMBEDDING_CACHE_DIR")
        self.allow_download = _flag(env, "INGEST_EMBEDDING_ALLOW_DOWNLOAD")
