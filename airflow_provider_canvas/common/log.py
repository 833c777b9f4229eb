"""The logger type the shared parts accept: a task's or a trigger's (Airflow's structlog loggers, two
different classes) or a standard library one, whichever the caller has."""

from __future__ import annotations

from typing import Any, Protocol


class Log(Protocol):
    """What the shared parts call on a logger: %-style messages (the first argument positional only, as
    the standard library names it ``msg`` and structlog ``event``)."""

    def debug(self, msg: Any, /, *args: Any) -> object: ...

    def info(self, msg: Any, /, *args: Any) -> object: ...

    def warning(self, msg: Any, /, *args: Any) -> object: ...

    def error(self, msg: Any, /, *args: Any) -> object: ...
