"""rayborg: an accelerator-management daemon with the OpenStack Cyborg v2 API, built on Ray.

The Python API (`rayborg.connect`, `rayborg.claim`, ...) is imported on first use, so that
`import rayborg` stays cheap (no Ray import).
"""

__version__ = "0.1.0"

_API = {"connect", "claim", "Rayborg", "Claim", "RayborgError", "ProgramResult", "ProgramResults"}
__all__ = sorted(_API | {"__version__"})


def __getattr__(name: str):
    if name in _API:
        from rayborg.python_api import batch, client

        return getattr(client, name, None) or getattr(batch, name)
    raise AttributeError(f"module 'rayborg' has no attribute {name!r}")
