"""Gunicorn entry point for the Cyborg 17 baseline: its WSGI init parses sys.argv, so set the config
file first, then import the application. Runs in the baseline's own virtualenv, never rayborg's."""

import os
import sys

sys.argv = ["cyborg-api", "--config-file", os.environ["CYBORG_BENCH_CONF"]]

from cyborg.wsgi.api import application  # noqa: F401
