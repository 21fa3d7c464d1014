"""The Python API: `rayborg.connect()`, `rayborg.claim()`. `client.py` is the `Rayborg` handle and
`connect`; `connection.py` finds the daemon (lease, Ray cluster) and calls its binders;
`selector.py` is the `where=` language; `status.py` gathers `rayborg status`; `batch.py` runs a
programming batch and `progress.py` draws its bar. Server code (actors/, api/, store/, drivers/)
never imports this package."""
