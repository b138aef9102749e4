#!/usr/bin/env bash
# A venv with Quix Streams for bench/pipeline.py --quix-python (not a dependency of
# citywatch): bash bench/quix_venv.sh [DIR]  →  DIR/bin/python (default /tmp/quixvenv)
set -euo pipefail
dir="${1:-/tmp/quixvenv}"
python3 -m venv "$dir"
"$dir/bin/pip" install -q "quixstreams==3.28.1" shapely pyproj numpy
echo "$dir/bin/python"
