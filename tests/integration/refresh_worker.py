"""One 'worker process' for the concurrency tests and kill drills: waits for a go-file, calls the API once."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from airflow_provider_canvas.brightspace.hooks.brightspace import BrightspaceHook
from airflow_provider_canvas.exceptions import LmsError


def main() -> None:
    conn_id, go = sys.argv[1], Path(sys.argv[2])
    hook = BrightspaceHook(conn_id)
    assert hook.connection  # connection read before the start line, so all start together
    print("ready", flush=True)
    while not go.exists():
        time.sleep(0.002)
    try:
        hook.whoami()
    except LmsError as err:  # the kill drills expect some workers to fail: report how
        print(json.dumps({"refreshes": hook.tokens.refresh_count, "error": str(err)}))
        sys.exit(3)
    print(json.dumps({"refreshes": hook.tokens.refresh_count}))


if __name__ == "__main__":
    main()
