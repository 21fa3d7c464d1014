"""rayborg: an accelerator-management daemon with the OpenStack Cyborg v2 API, built on Ray."""

__version__ = "0.1.0"
