#!/usr/bin/env bash
# One-command GPU check for framestream (see src/framestream/bench/device_check.py).
#
#   bench/device_check.sh            # full size on the first CUDA device, < 8 min on one H100/H200
#   bench/device_check.sh --smoke    # tiny sizes on CPU: proves the script runs end to end
#
# Nothing is downloaded: weights are random at full size. framestream runs from src/
# (no install needed). Python packages a bare GPU machine lacks (diffusers for the
# peer comparison, av/einops/rich for framestream's imports) travel with the check as
# wheels in bench/wheels/ (or $FRAMESTREAM_WHEELS), installed offline with --no-deps.
# Output: bench/results/device_check.json (override with --out PATH).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
WHEELS="${FRAMESTREAM_WHEELS:-bench/wheels}"
if compgen -G "$WHEELS/*.whl" > /dev/null; then
    "$PY" -m pip install --quiet --no-index --no-deps --find-links "$WHEELS" "$WHEELS"/*.whl
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
# The check stops starting sections after --budget-s (default 420 s); this is the hard stop.
exec timeout "${DEVICE_CHECK_TIMEOUT:-470}" "$PY" -m framestream.bench.device_check "$@"
