"""HTTP API of the ingest supervisor (FastAPI app at `api.app:app`)."""
