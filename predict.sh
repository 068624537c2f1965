#!/bin/sh
# Organiser entry point: segments /workspace/inputs/*.npz into /workspace/outputs/.
# Paths and options can be overridden by arguments or QMEDSAM_* environment variables
# (see `python -m qmedsam.predict --help`).
HERE=$(cd "$(dirname "$0")" && pwd)
PYTHON=${PYTHON:-python3}
if [ -x "$HERE/.venv/bin/python" ] && [ -z "${QMEDSAM_SYSTEM_PYTHON:-}" ]; then PYTHON="$HERE/.venv/bin/python"; fi
export PYTHONPATH="$HERE/src${PYTHONPATH:+:$PYTHONPATH}"
exec "$PYTHON" -m qmedsam.predict "$@"
