"""The Python API: `rayborg.connect()`, `rayborg.claim()`; see `client.py`."""
