"""The share of the progress bar each stage of a job takes (percent)."""

from __future__ import annotations

# Reading and fetching the data source.
FETCH_START = 2
FETCH_END = 40
