"""The one error of the Python API."""

from __future__ import annotations


class RayborgError(Exception):
    """A readable error from the Python API (no rayborg running, bad selector, claim refused...)."""
