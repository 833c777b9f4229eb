"""One 'worker process' for the concurrency tests and kill drills: waits for a go-file, calls the API once."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from airflow_provider_canvas.brightspace.hooks.brightspace import BrightspaceHook
from airflow_provider_canvas.exceptions import LmsError

# A worker whose test never says go gives up; so does one whose test process died (a SIGKILLed pytest runs
# no finalizer): no worker is left polling.
GO_TIMEOUT_SECONDS = 300


def main() -> None:
    conn_id, go = sys.argv[1], Path(sys.argv[2])
    parent = os.getppid()
    hook = BrightspaceHook(conn_id)
    assert hook.connection  # connection read before the start line, so all start together
    print("ready", flush=True)
    deadline = time.monotonic() + GO_TIMEOUT_SECONDS
    # A short poll: the workers must start their calls at nearly the same moment.
    while not go.exists():
        if os.getppid() != parent or time.monotonic() > deadline:
            sys.exit(f"no go-file {go} from a live test process within {GO_TIMEOUT_SECONDS}s: giving up")
        time.sleep(0.002)
    try:
        hook.whoami()
    except LmsError as err:  # the kill drills expect some workers to fail: report how
        print(json.dumps({"refreshes": hook.tokens.refresh_count, "error": str(err)}))
        sys.exit(3)
    print(json.dumps({"refreshes": hook.tokens.refresh_count}))


if __name__ == "__main__":
    main()
