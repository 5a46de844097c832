#!/usr/bin/env bash
# Creates models/train/.venv with the pinned training stack (scikit-learn, skl2onnx,
# onnx, onnxruntime). Idempotent: reinstalls only when requirements.txt changed.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/.venv"
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$here/requirements.txt" | cut -d' ' -f1)"
if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    exit 0
fi
if ! python3 -m venv --help >/dev/null 2>&1; then
    echo "setup.sh: python3 with the venv module is required (Debian: apt-get install python3-venv)" >&2
    exit 1
fi
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
echo "$want" > "$stamp"
