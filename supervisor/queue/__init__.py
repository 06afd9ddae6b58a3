"""The queue library: the Redis job protocol that producers, the API, `ingestctl` and the
daemon share. It imports nothing of the daemon (`tests/test_layers.py` holds that)."""
