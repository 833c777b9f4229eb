"""Resumable streaming downloads to a final name: complete, of the announced size, fsynced, or nothing.

Nothing here is Brightspace-specific: a hook hands in its authorised GET and its session.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import requests

from airflow_provider_canvas.common.files import fsync_dir, start_writeback
from airflow_provider_canvas.common.net import absolute_url, redact_url, same_host
from airflow_provider_canvas.common.retry import RetryPolicy
from airflow_provider_canvas.common.zip_check import CheckedZip, ZipStreamCheck
from airflow_provider_canvas.exceptions import DownloadError, ExtractFormatError

DOWNLOAD_CHUNK_BYTES = 2**20
#: Written data is handed to the disk every this many bytes, so the final fsync does not wait for all of it.
WRITEBACK_BYTES = 16 * 2**20
_MiB = 2**20

#: An authorised streaming GET on the API host: (url, headers, scope) -> response.
AuthorisedGet = Callable[[str, Mapping[str, str], "str | None"], requests.Response]


@dataclass(frozen=True)
class DownloadedFile:
    path: Path
    size: int
    attempts: int
    resumed_from: tuple[int, ...] = ()  # byte offsets where a broken transfer was resumed
    checked: CheckedZip | None = None  # what the ZIP check found (``check_zip=True``)


class _BrokenTransfer(Exception):
    """The body ended early or the server would not resume: try again."""


class StreamingDownload:
    """Streams URLs of one API host to files in constant memory, completely or not at all.

    The body goes to a hidden ``.<name>.part`` beside the destination, handed to the disk as it
    arrives (so the closing fsync is short), fsynced, and renamed to the destination only when
    complete (and, with ``expected_size``, of that exact size). A redirect to storage on another
    host goes there without the bearer token (requests drops ``Authorization`` on a cross-host
    redirect); a broken transfer is resumed with a Range request to that storage URL, again
    without the token, and falls back to a fresh request (a new signed URL) when the storage
    refuses. After ``attempts`` tries, or on a size mismatch, :class:`DownloadError` is raised
    and the partial file removed. With ``check_zip`` the body must also be a ZIP of one member whose
    CRC checks out (:class:`~airflow_provider_canvas.common.zip_check.ZipStreamCheck`, inflated as it
    arrives), else :class:`ExtractFormatError` and nothing is kept.

    :param base_url: the API host; only URLs there are sent with the bearer token.
    :param authorised_get: the hook's authorised, retried GET (streaming).
    :param session: for plain requests to storage hosts (no token).
    :param timeout: (connect, read) seconds of those plain requests.
    :param retry: how long to wait before resuming (its backoff).
    :param log: where progress and retries are reported.
    """

    def __init__(
        self,
        *,
        base_url: str,
        authorised_get: AuthorisedGet,
        session: requests.Session,
        timeout: tuple[float, float],
        retry: RetryPolicy,
        log: logging.Logger,
    ) -> None:
        self.base_url = base_url
        self._authorised_get = authorised_get
        self._session = session
        self._timeout = timeout
        self._retry = retry
        self.log = log

    def fetch(
        self,
        url: str,
        destination: str | os.PathLike[str],
        *,
        expected_size: int | None = None,
        size_name: str = "the expected size",
        scope: str | None = None,
        attempts: int = 5,
        progress_every_bytes: int = 64 * _MiB,
        check_zip: bool = False,
        check_member: Callable[[str, str], None] | None = None,
    ) -> DownloadedFile:
        """Download ``url`` to ``destination``; ``size_name`` says where ``expected_size`` came from.

        ``check_member(member, label)`` (with ``check_zip``) judges the ZIP member's name and raises to
        refuse the file: nothing is then kept.
        """
        destination = Path(destination)
        destination.parent.mkdir(parents=True, exist_ok=True)
        part = destination.with_name(f".{destination.name}.part")
        where = redact_url(absolute_url(self.base_url, url))
        check = ZipStreamCheck(where) if check_zip else None
        checked: CheckedZip | None = None
        written = 0
        handed_to_disk = 0  # bytes [0, handed_to_disk) are being or have been written out
        storage_url: str | None = None  # where the API redirected us: resumes go straight there
        resumed: list[int] = []
        attempt = 0
        next_progress = progress_every_bytes
        try:
            with open(part, "wb") as out:
                while True:
                    attempt += 1
                    try:
                        response, storage_url = self._open(url, written, storage_url, scope)
                        with response:
                            if written and response.status_code != 206:
                                self.log.warning("%s: the server would not resume; starting over", where)
                                out.seek(0)
                                out.truncate()
                                written = handed_to_disk = 0
                                if check is not None:
                                    check.reset()
                                next_progress = progress_every_bytes
                            elif written:
                                resumed.append(written)
                            total = _announced_total(response, written, expected_size, size_name, where)
                            for chunk in response.iter_content(DOWNLOAD_CHUNK_BYTES):
                                out.write(chunk)
                                written += len(chunk)
                                if check is not None:
                                    check.feed(chunk)
                                if written - handed_to_disk >= WRITEBACK_BYTES:
                                    out.flush()
                                    start_writeback(out.fileno(), handed_to_disk, written - handed_to_disk)
                                    handed_to_disk = written
                                if written >= next_progress:
                                    self._log_progress(where, written, total)
                                    next_progress += progress_every_bytes
                        if total is not None and written < total:
                            raise _BrokenTransfer(f"body ended at byte {written} of {total}")
                        break
                    except (requests.RequestException, _BrokenTransfer) as err:
                        if attempt >= attempts:
                            raise DownloadError(
                                f"{where}: download failed after {attempt} attempts at byte {written} "
                                f"({_describe(err)}); nothing was kept"
                            ) from None
                        delay = self._retry.backoff(attempt)
                        self.log.warning(
                            "%s: transfer broke at byte %d (%s); resuming in %.1fs (attempt %d of %d)",
                            where,
                            written,
                            type(err).__name__,
                            delay,
                            attempt + 1,
                            attempts,
                        )
                        time.sleep(delay)
                out.flush()
                os.fsync(out.fileno())
            if expected_size is not None and written != expected_size:
                raise DownloadError(
                    f"{where}: received {written} bytes but {size_name} is {expected_size}; nothing was kept"
                )
            if check is not None:
                checked = self._verify(check, part, destination)
                if check_member is not None:
                    self._check_member(check_member, checked.member, where, destination)
            os.replace(part, destination)
            fsync_dir(destination.parent)
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        self.log.info(
            "%s: saved %.1f MiB to %s in %d attempt(s)%s",
            where,
            written / _MiB,
            destination,
            attempt,
            f", resumed at bytes {resumed}" if resumed else "",
        )
        return DownloadedFile(destination, written, attempt, tuple(resumed), checked)

    def _verify(self, check: ZipStreamCheck, part: Path, destination: Path) -> CheckedZip:
        try:
            checked = check.verify(part)
        except ExtractFormatError as err:
            raise ExtractFormatError(
                f"{err}. Nothing was kept under {destination.name}; the next pull downloads it again. "
                "A body of the right length that is no ZIP usually comes from a proxy or storage host "
                "answering in Brightspace's place."
            ) from None
        self.log.info(
            "%s: ZIP checked, member %r, %.1f MiB of CSV, CRC %08x%s",
            check.label,
            checked.member,
            checked.size / _MiB,
            checked.crc,
            " (read again from disk: the layout cannot be checked as a stream)" if checked.reread else "",
        )
        return checked

    @staticmethod
    def _check_member(
        check_member: Callable[[str, str], None], member: str, where: str, destination: Path
    ) -> None:
        try:
            check_member(member, where)
        except ExtractFormatError as err:
            raise ExtractFormatError(
                f"{err}. Nothing was kept under {destination.name} and nothing recorded."
            ) from None

    def _open(
        self, url: str, offset: int, storage_url: str | None, scope: str | None
    ) -> tuple[requests.Response, str | None]:
        """A streaming response for ``url`` from byte ``offset``, and the storage URL it came from."""
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        if offset and storage_url:
            # A plain request (no bearer) to the signed URL: the token never leaves the API host.
            response = self._session.get(storage_url, headers=headers, stream=True, timeout=self._timeout)
            if response.status_code in (200, 206):
                return response, storage_url
            response.close()
            if response.status_code >= 500:
                raise _BrokenTransfer(f"storage answered HTTP {response.status_code} to the resume")
            self.log.info(
                "Signed download URL refused the resume (HTTP %d); asking for a new one", response.status_code
            )
        absolute = absolute_url(self.base_url, url)
        if not same_host(absolute, self.base_url):
            # Already a pre-signed URL on another host: it must not receive the token.
            response = self._session.get(absolute, headers=headers, stream=True, timeout=self._timeout)
            if response.status_code >= 400:
                response.close()
                raise DownloadError(f"{redact_url(absolute)}: HTTP {response.status_code}")
            return response, absolute
        response = self._authorised_get(absolute, headers, scope)
        final = response.url
        redirected = bool(response.history) and not same_host(final, self.base_url)
        return response, (final if redirected else None)

    def _log_progress(self, where: str, written: int, total: int | None) -> None:
        if total:
            self.log.info(
                "%s: %.0f of %.0f MiB (%.0f%%)", where, written / _MiB, total / _MiB, 100 * written / total
            )
        else:
            self.log.info("%s: %.0f MiB", where, written / _MiB)


def _announced_total(
    response: requests.Response, offset: int, expected_size: int | None, size_name: str, where: str
) -> int | None:
    length = response.headers.get("Content-Length")
    total = offset + int(length) if length and length.isdigit() else None
    if response.status_code == 206:
        content_range = response.headers.get("Content-Range", "")
        if not content_range.startswith(f"bytes {offset}-"):
            raise _BrokenTransfer(f"resume asked for byte {offset}, got {content_range!r}")
    if expected_size is not None and total is not None and total != expected_size:
        raise DownloadError(
            f"{where}: the server sends {total} bytes but {size_name} is {expected_size}; nothing was kept"
        )
    return total if total is not None else expected_size


def _describe(err: BaseException) -> str:
    # requests' messages quote the URL, query string (signature) included: name the error only.
    return f"{type(err).__name__}: {err}" if isinstance(err, _BrokenTransfer) else type(err).__name__
