#!/usr/bin/env bash
# Downloads into .whl/ the pure-Python package that benchmarks/gpu_session.sh needs and the
# accelerator image lacks (it has jax, flax, optax, orbax, chex and torch). Run here, once.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp -d .whl "ml-collections==1.1.0"
ls .whl
