"""Keeps a hook's DAP job creations under DAP's per-client limit, so a many-table pull sends no 429 storm.

DAP allows about 5 job creations a minute per client. A pull of the whole namespace (about 90 tables)
asks for far more: rather than send them and be refused, each creation waits until the last
``calls`` creations are a ``window`` old. Other processes of the same client are not seen here:
their creations still meet DAP's 429, which the hook waits out.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable


class JobCreationPacer:
    """At most ``calls`` job creations in any ``window`` seconds, counted from when DAP answered.

    :param sleep: how to wait (tests and the hook's own logging pass theirs).
    """

    def __init__(
        self,
        calls: int,
        window: float,
        *,
        log: logging.Logger,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if calls < 1 or window <= 0:
            raise ValueError(f"a job creation rate needs calls >= 1 and window > 0, got {calls}/{window}")
        self.calls = calls
        self.window = window
        self.log = log
        self._sleep = sleep
        self._answered: deque[float] = deque(maxlen=calls)
        self._lock = threading.Lock()
        #: Work to do while waiting for a slot, given the monotonic time the slot frees (the pull
        #: downloads the jobs already complete): the wait then costs nothing.
        self.idle: Callable[[float], None] | None = None
        #: Seconds spent waiting for a free slot, in all (for logs and benchmarks).
        self.waited = 0.0

    def wait_for_slot(self, what: str) -> None:
        """Block until one more creation fits in the window."""
        with self._lock:
            if len(self._answered) < self.calls:
                return
            # The server counted the oldest call at or before its answer reached us: a window after
            # the answer, that call has surely left the server's window too.
            delay = self._answered[0] + self.window - time.monotonic()
            if delay <= 0:
                return
            self.log.info(
                "%s: pacing job creation, waiting %.1fs (DAP allows %d per %.0fs per client)",
                what,
                delay,
                self.calls,
                self.window,
            )
            self.waited += delay
            free_at = time.monotonic() + delay
            if self.idle is not None:
                self.idle(free_at)
            left = free_at - time.monotonic()
            if left > 0:
                self._sleep(left)

    def answered(self) -> None:
        """DAP answered a creation (taken or refused: both count against the limit)."""
        with self._lock:
            self._answered.append(time.monotonic())
