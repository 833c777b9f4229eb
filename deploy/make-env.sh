#!/usr/bin/env bash
# Write the .env that docker-compose.yaml needs: fresh secrets and your user id. Usage:
#   bash deploy/make-env.sh [path]    (default: .env beside docker-compose.yaml)
# It never overwrites an existing file: a new FERNET_KEY would make every stored token unreadable.
# To rotate the key later, set FERNET_KEY=new,old, run `airflow rotate-fernet-key`, then drop ",old".
set -euo pipefail
target="${1:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.env}"
if [[ -e "$target" ]]; then
  echo "$target exists; not overwriting it (see the comment at the top of $0)" >&2
  exit 1
fi
python3 - "$target" <<'PY'
import base64, os, secrets, sys

lines = [
    # The official image's airflow user when run as root: Airflow should not run as root in containers.
    f"AIRFLOW_UID={os.getuid() or 50000}",
    # Fernet.generate_key(): 32 random bytes, URL-safe base64.
    f"FERNET_KEY={base64.urlsafe_b64encode(os.urandom(32)).decode()}",
    f"AIRFLOW_JWT_SECRET={secrets.token_urlsafe(32)}",
    f"AIRFLOW_API_SECRET_KEY={secrets.token_urlsafe(32)}",
]
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
with os.fdopen(fd, "w") as handle:
    handle.write("\n".join(lines) + "\n")
PY
echo "wrote $target (mode 0600): AIRFLOW_UID, FERNET_KEY, AIRFLOW_JWT_SECRET, AIRFLOW_API_SECRET_KEY"
