"""The ingest supervisor: runs Python ingestion jobs from Redis in isolated children."""

__version__ = "0.1.0"
