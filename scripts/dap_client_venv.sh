# Sourced by the official-client tests and benchmark: make .venv-dap-client/ at the repo root with
# Instructure's own DAP client (instructure-dap-client, pinned), once.
# It has its own virtualenv because it pins exact versions (aiohttp, PyJWT, jsonschema, rich,
# typing_extensions...) that clash with Airflow's constraints: it cannot be installed beside Airflow.
# Afterwards DAP_CLIENT_VENV names the virtualenv and "$DAP_CLIENT_VENV/bin/dap" is its CLI.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DAP_CLIENT_VERSION="2.3.1"
DAP_CLIENT_VENV="$ROOT/.venv-dap-client"
DAP_CLIENT_STAMP="$DAP_CLIENT_VENV/.installed-$DAP_CLIENT_VERSION"
if [ ! -f "$DAP_CLIENT_STAMP" ]; then
  echo "Installing instructure-dap-client $DAP_CLIENT_VERSION into $DAP_CLIENT_VENV (about a minute the first time)..."
  [ -x "$DAP_CLIENT_VENV/bin/python" ] || python3.11 -m venv "$DAP_CLIENT_VENV" 2>/dev/null || python3 -m venv "$DAP_CLIENT_VENV"
  if ! "$DAP_CLIENT_VENV/bin/python" -m pip install "instructure-dap-client[postgresql]==$DAP_CLIENT_VERSION" \
       > "$DAP_CLIENT_VENV/install.log" 2>&1; then
    tail -30 "$DAP_CLIENT_VENV/install.log"
    echo "Installing instructure-dap-client failed; the whole log is $DAP_CLIENT_VENV/install.log" >&2
    exit 1
  fi
  rm -f "$DAP_CLIENT_VENV"/.installed-*
  touch "$DAP_CLIENT_STAMP"
fi
export DAP_CLIENT_VENV
