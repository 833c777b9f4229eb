"""Every error this provider raises, under :class:`LmsError`. None ever carries a token or a secret.

:class:`LmsConfigurationError` and :class:`LmsAuthError` are also Airflow's
``AirflowFailException``: a person must fix the connection, the arguments or the authorization,
so Airflow fails the task at once instead of spending its retries on the same answer.
"""

from __future__ import annotations

from pathlib import Path

from airflow.sdk.exceptions import AirflowFailException


class LmsError(Exception):
    """Base class of every error raised by this provider."""


class LmsConfigurationError(LmsError, ValueError, AirflowFailException):
    """The connection or the operator arguments are wrong; the message says what to fix."""


class LmsAuthError(LmsError, AirflowFailException):
    """The token endpoint refused the refresh token or the client; a person must act."""

    def __init__(self, message: str, *, error: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.error = error
        self.status = status


class LmsApiError(LmsError):
    """The API answered with an error status."""

    def __init__(self, message: str, *, status: int, url: str) -> None:
        super().__init__(message)
        self.status = status
        self.url = url


class LmsNotFoundError(LmsApiError):
    """404: the object (account, data set, job) does not exist."""


class LmsPermissionError(LmsApiError):
    """The token is valid but may not do this: a missing developer-key scope or user permission."""

    def __init__(self, message: str, *, status: int, url: str, required_scope: str | None) -> None:
        super().__init__(message, status=status, url=url)
        self.required_scope = required_scope


class LmsThrottledError(LmsApiError):
    """Still throttled after every retry. ``retry_after``: the seconds the last answer asked for, if any."""

    def __init__(self, message: str, *, status: int, url: str, retry_after: float | None = None) -> None:
        super().__init__(message, status=status, url=url)
        self.retry_after = retry_after


class LmsUnavailableError(LmsApiError):
    """Connection errors or 5xx answers outlasted the retries."""


class TokenLockTimeout(LmsError):
    """Another worker held the refresh lock longer than the lock timeout."""


class TokenSaveError(LmsError):
    """A refresh succeeded but the new tokens could not be saved to the connection.

    They are kept in ``rescue_path`` (mode 0600), which the next refresh on this host restores
    automatically.
    """

    def __init__(self, message: str, *, rescue_path: Path) -> None:
        super().__init__(message)
        self.rescue_path = rescue_path


class MetadataWriteError(LmsError):
    """A connection or variable could not be written. The message never holds the value.

    ``retryable`` is False when trying again cannot help (refused credentials, missing connection).
    """

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class AuthorizeError(LmsError):
    """``canvas-oauth authorize`` did not complete; the message says what to fix."""


class DownloadError(LmsError):
    """A download did not complete after every attempt, or its size is not the announced one.

    Nothing is left under the destination name when this is raised.
    """


#: 0.1's name, from when only Brightspace downloaded files.
BdsDownloadError = DownloadError


class ExportJobError(LmsError):
    """An Advanced Data Sets export job failed, was deleted, expired, or did not finish in time."""


class DapJobError(LmsError):
    """A Canvas Data 2 (DAP) query job failed, expired, or did not finish in time."""


class DapSnapshotRequiredError(LmsApiError):
    """DAP refused an incremental query (400 SnapshotRequiredError): the table was reloaded, only a
    new snapshot can follow. The pull starts one by itself."""


class DapSchemaError(LmsError, ValueError):
    """A schema file is not a DAP table schema this loader understands."""


class DapSchemaChangeError(LmsError):
    """A new schema version changes the table in a way a load cannot apply by adding columns."""


class DapDataError(LmsError, ValueError):
    """A pulled file is not what DAP serves, or a value does not fit its column. Says file, line, column."""


class DapObjectError(LmsError):
    """A Canvas Data 2 object could not be downloaded whole, or is not intact gzip; nothing was kept."""


class ExtractFormatError(LmsError, ValueError):
    """The extract is not a ZIP holding one well-formed CSV (corrupt, truncated, unexpected content)."""


class DifferentialGapError(LmsError):
    """Differentials were missed: they are kept 14 days and the last pull is older than that."""


class SisImportError(LmsError):
    """A Canvas SIS import failed, was aborted, refused a change_threshold, or did not end in time."""


class SisPayloadRefused(LmsError, AirflowFailException):
    """A SIS payload was refused before upload (empty, much smaller than the last good one); nothing sent."""


class AccountReportError(LmsError):
    """A Canvas account report ended in ``error``/``aborted``, or did not finish in time."""
