"""One wait loop for every job the provider waits for: in the triggerer, in a task, and for asset watchers.

A deadline (absolute, so it survives a triggerer restart), a budget of transient errors in a row,
an optional first wait, a last look when the deadline has passed, and cancellation at any await.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

from airflow_provider_canvas.exceptions import LmsError, LmsThrottledError, LmsUnavailableError

T = TypeVar("T")

#: How long the look after the deadline may take (a hanging server is cut off then).
LAST_LOOK_SECONDS = 5.0
#: Errors that the next look may not see again: throttling, a server or network down for a while.
TRANSIENT: tuple[type[BaseException], ...] = (LmsThrottledError, LmsUnavailableError)


@dataclass(frozen=True)
class Waited(Generic[T]):
    """How a wait ended: ``done`` with the check's ``value``, ``timeout``, or ``error`` (``message``)."""

    status: Literal["done", "timeout", "error"]
    value: T | None = None
    message: str = ""


@dataclass(frozen=True)
class Poll:
    """When to look.

    :param interval: seconds between two looks.
    :param timeout_at: the deadline in epoch seconds (None: none). Past it one last look still
        runs: a job done just in time counts.
    :param max_transient_errors: transient errors in a row before the wait ends in ``error``
        (None: never; a watcher keeps watching).
    :param first_wait: wait one interval before the first look. A trigger whose job was seen
        unfinished a moment ago sets it; it also lets the deferring worker exit first: Airflow 3.3
        fails a task whose trigger fires before the executor has seen that worker end.
    """

    interval: float
    timeout_at: float | None = None
    max_transient_errors: int | None = 10
    first_wait: bool = False

    def left(self) -> float | None:
        """Seconds to the deadline (None: no deadline)."""
        return None if self.timeout_at is None else self.timeout_at - time.time()

    def pause(self) -> float:
        left = self.left()
        return self.interval if left is None else max(0.0, min(self.interval, left))

    async def until(
        self,
        check: Callable[[], Awaitable[T | None]],
        *,
        what: str,
        log: logging.Logger,
        transient: tuple[type[BaseException], ...] = TRANSIENT,
    ) -> Waited[T]:
        """Call ``check`` until it returns something other than None, the deadline passes or it fails.

        ``transient`` errors are logged and looked at again (within the budget); any other
        :class:`LmsError` ends the wait in ``error``; anything else (a bug) propagates.
        """
        if self.first_wait:  # ends early enough for one look bounded by the deadline itself
            left = self.left()
            await asyncio.sleep(
                self.interval if left is None else min(self.interval, left - LAST_LOOK_SECONDS)
            )
        errors = 0
        while True:
            left = self.left()
            bound = None if left is None else (left if left > 0 else LAST_LOOK_SECONDS)
            try:
                value = await asyncio.wait_for(check(), timeout=bound)
            except asyncio.TimeoutError:
                return Waited("timeout", message=f"{what} did not end before the deadline")
            except transient as err:
                errors += 1
                if self.max_transient_errors is not None and errors > self.max_transient_errors:
                    return Waited("error", message=f"{what}: {err}")
                log.warning("%s: %s; looking again in %.0fs", what, err, self.pause())
            except LmsError as err:
                return Waited("error", message=f"{what}: {err}")
            else:
                errors = 0
                if value is not None:
                    return Waited("done", value)
            left = self.left()
            if left is not None and left <= 0:
                return Waited("timeout", message=f"{what} did not end before the deadline")
            await asyncio.sleep(self.pause())

    def until_in_task(self, check: Callable[[], T | None], *, what: str, log: logging.Logger) -> Waited[T]:
        """:meth:`until` for a task that waits itself: ``check`` (blocking) runs in a thread."""
        return asyncio.run(self.until(lambda: asyncio.to_thread(check), what=what, log=log))
