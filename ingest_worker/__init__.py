"""The ingestion child: `python -m ingest_worker` reads one job on stdin and ingests it.

It speaks only the child protocol (PROGRESS/RESULT lines on stdout, exit 0/65/75) and
imports nothing heavy at start-up: a tiny `text` job loads only the standard library modules
it needs, so that thousands of small jobs a second are not dominated by interpreter start.
"""
