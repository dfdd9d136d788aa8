#!/usr/bin/env bash
# Sets up one Cloud TPU VM worker for launch_tpu.sh: a virtualenv ~/nirgan-venv on a Python
# that satisfies nirgan-jax's requires-python (>= 3.11), holding the checkout SRC (installed
# editable, with the comma-separated EXTRAS) and jax[tpu].
#
#   tpu_worker_setup.sh SRC EXTRAS          e.g. tpu_worker_setup.sh ~/nirgan-jax gcs,torch
#
# The documented runtime, tpu-ubuntu2204-base, ships Python 3.10. Where python3 is older than
# 3.11, uv (from PATH, else installed with that Python's pip into ~/.local) installs a
# standalone CPython 3.11 (`uv python install 3.11`) and the virtualenv is made with it. A step
# that fails stops the script with one line, `error: ...`, naming it, and exit status 1.
set -euo pipefail

if (($# != 2)); then
  echo "usage: tpu_worker_setup.sh SRC EXTRAS" >&2
  exit 2
fi
src=$1 extras=$2
required=3.11
venv="$HOME/nirgan-venv"

fail() {
  echo "error: tpu_worker_setup.sh on $(hostname): $*" >&2
  exit 1
}
version() { "$1" -c 'import platform; print(platform.python_version())'; }

python=python3
command -v "$python" >/dev/null || fail "no python3 on this worker"
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  have=$(version "$python")
  uv=$(command -v uv || true)
  if [[ -z "$uv" ]]; then
    "$python" -m pip install -q --user uv \
      || fail "Python $have is older than $required, and pip cannot install uv to fetch $required"
    uv="$("$python" -m site --user-base)/bin/uv"
  fi
  "$uv" python install "$required" || fail "uv cannot install Python $required"
  python=$("$uv" python find "$required") || fail "uv finds no Python $required after installing it"
fi

rm -rf "$venv"
"$python" -m venv "$venv" || fail "$python cannot create a virtualenv in $venv"
"$venv/bin/python" -m pip install -q -U pip || fail "pip cannot update itself in $venv"
"$venv/bin/python" -m pip install -q -e "$src[$extras]" "jax[tpu]" \
  || fail "pip cannot install $src[$extras] and jax[tpu] into $venv"
echo "nirgan-jax[$extras] with jax[tpu] in $venv (Python $(version "$venv/bin/python"))"
