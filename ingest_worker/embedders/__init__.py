"""Embedders other than the built-in hash: each module is imported only for jobs that use it."""
