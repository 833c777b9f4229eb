# Sourced by scripts/demo and scripts/test: make .venv at the repo root and install the
# provider with the pinned versions it is tested with (constraints.txt), once.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
STAMP="$VENV/.installed-$(cat "$ROOT/pyproject.toml" "$ROOT/constraints.txt" | sha256sum | cut -c1-16)"
if [ ! -f "$STAMP" ]; then
  echo "Installing the provider, Airflow 3.3.2 and the test tools into $VENV (2-3 minutes the first time)..."
  [ -x "$VENV/bin/python" ] || python3.11 -m venv "$VENV" 2>/dev/null || python3 -m venv "$VENV"
  # Build noise goes to a log, shown only if the install fails.
  if ! { "$VENV/bin/python" -m pip install --upgrade pip &&
         "$VENV/bin/python" -m pip install --constraint "$ROOT/constraints.txt" -e "$ROOT[postgres,redis,celery,fab,dev,docs]"; } \
       > "$VENV/install.log" 2>&1; then
    tail -50 "$VENV/install.log"
    echo "Install failed; the whole log is $VENV/install.log" >&2
    exit 1
  fi
  rm -f "$VENV"/.installed-*
  touch "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
cd "$ROOT"
