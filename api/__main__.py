"""`ingest-api`: serve `api.app:app` with uvicorn; flags override environment variables."""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from collections.abc import Mapping, Sequence

import uvicorn

from api.settings import ApiSettings, ApiSettingsError, load_api_settings


def build_parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ingest-api",
        description="HTTP API of the ingest supervisor: enqueue jobs, job status, "
        "/health/queue. Other settings (REDIS_URL, INGEST_QUEUE, INGEST_API_TOKEN, "
        "INGEST_API_AUTH_READS, INGEST_API_ALLOWED_HOSTS, INGEST_API_INSECURE, "
        "INGEST_HEALTH_MAX_BACKLOG, INGEST_HEALTH_MAX_WAIT_SECONDS, "
        "INGEST_HEALTH_TIMEOUT_SECONDS) come from the environment.",
    )
    p.add_argument(
        "--host",
        default=env.get("INGEST_API_HOST", "127.0.0.1"),
        help="address to bind [env INGEST_API_HOST, default 127.0.0.1]",
    )
    p.add_argument(
        "--port",
        type=int,
        default=int(env.get("INGEST_API_PORT", "8000")),
        help="port to bind [env INGEST_API_PORT, default 8000]",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=int(env.get("INGEST_API_WORKERS", "1")),
        help="uvicorn worker processes [env INGEST_API_WORKERS, default 1]",
    )
    p.add_argument(
        "--log-level",
        default=env.get("INGEST_LOG_LEVEL", "info").lower(),
        choices=["debug", "info", "warning", "error"],
        help="[env INGEST_LOG_LEVEL, default info]",
    )
    return p


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def exposure_refusal(host: str, settings: ApiSettings, hosts_set: bool) -> str | None:
    """Why serving on `host` with these settings would expose the API, if it would."""
    if is_loopback(host):
        return None
    if not settings.auth_enabled and not settings.insecure:
        return (
            f"refusing to serve on {host} without INGEST_API_TOKEN: anyone who reaches it "
            "could enqueue, cancel and read every tenant's jobs. Set INGEST_API_TOKEN (or "
            "INGEST_API_TOKEN_FILE), or INGEST_API_INSECURE=1 on a network you trust."
        )
    if not hosts_set:
        return (
            f"serving on {host} needs INGEST_API_ALLOWED_HOSTS: the Host names clients use "
            "(or * behind a proxy that checks Host); only loopback names are served otherwise"
        )
    return None


def main(argv: Sequence[str] | None = None) -> int:
    env = os.environ
    try:
        args = build_parser(env).parse_args(argv)
    except ValueError as exc:  # a non-integer INGEST_API_PORT / INGEST_API_WORKERS
        print(f"ingest-api: {exc}", file=sys.stderr)
        return 2
    if not 0 <= args.port <= 65535 or args.workers < 1:
        print("ingest-api: --port must be 0-65535 and --workers >= 1", file=sys.stderr)
        return 2
    try:
        settings = load_api_settings(env)  # fail fast with the variable's name, before binding
    except ApiSettingsError as exc:
        print(f"ingest-api: {exc}", file=sys.stderr)
        return 2
    refusal = exposure_refusal(args.host, settings, "INGEST_API_ALLOWED_HOSTS" in env)
    if refusal:
        print(f"ingest-api: {refusal}", file=sys.stderr)
        return 2
    uvicorn.run(
        "api.app:app",
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        proxy_headers=True,
        # A deploy's SIGTERM closes open SSE streams after this long instead of waiting forever.
        timeout_graceful_shutdown=5,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
