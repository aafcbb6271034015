#!/usr/bin/env bash
# Builds every Bazel target and runs the Bazel test targets given (default: the estimator tests)
# against a Python virtual environment that has rljax's test dependencies installed.
#   sudo apt-get install bazel-bootstrap bazel-platforms     # Debian/Ubuntu, Bazel 4.2, offline
#   bash scripts/bazel_test.sh                                # tabular, primitives, advantages, exact gradients
#   bash scripts/bazel_test.sh //...                          # everything
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${RLJAX_VENV:-.venv-ci}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "no virtual environment at $VENV: run 'bash scripts/test.sh' once, or set RLJAX_VENV" >&2
  exit 2
fi
command -v bazel >/dev/null || { echo "bazel not found: apt-get install bazel-bootstrap bazel-platforms" >&2; exit 2; }
PY="$(cd "$VENV" && pwd)/bin/python"
SITE="$("$PY" -c "import site; print(site.getsitepackages()[0])")"
if [ $# -eq 0 ]; then
  set -- $(sed -n 's/^    name = "\(test_\(tabular\|primitives\|advantages\|exact_gradients\)\)",$/\/\/:\1/p' BUILD)
fi
TP="$(pwd)/third_party/bazel"
FLAGS=(--python_path="$PY"
       --override_repository=rules_cc="$TP/rules_cc"
       --override_repository=rules_java="$TP/rules_java"
       --override_repository=remote_coverage_tools="$TP/remote_coverage_tools"
       --override_repository=platforms=/usr/share/bazel/tools/platforms)
start=$(date +%s)
bazel --batch build //... "${FLAGS[@]}"
bazel --batch test "$@" "${FLAGS[@]}" --test_env=JAX_PLATFORMS=cpu --test_env=RLJAX_SITE="$SITE"
echo "bazel build + test took $(( $(date +%s) - start )) s"
