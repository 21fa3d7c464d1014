#!/usr/bin/env bash
# Create the Cyborg 17 baseline virtualenv (never rayborg's): openstack-cyborg==17.0.0 + gunicorn.
# Idempotent: a venv that already imports cyborg.wsgi.api is kept.
set -euo pipefail
VENV="${RAYBORG_BENCH_CYBORG_VENV:-${TMPDIR:-/tmp}/rayborg-bench-cyborg}"
PY="${PYTHON:-python3}"
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import cyborg.api.app, gunicorn" 2>/dev/null; then
    echo "$VENV"; exit 0
fi
"$PY" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip >&2
"$VENV/bin/pip" install -q "openstack-cyborg==17.0.0" gunicorn >&2
"$VENV/bin/python" -c "import cyborg.api.app, gunicorn" >&2
echo "$VENV"
