"""The files of a complete DAP job: presigned URLs, streamed downloads, gzip verified before the final name.

DAP serves each object as a gzip file behind a presigned URL on another host that lasts about 15
minutes. A URL that stops working (expired, refused) is replaced by asking DAP again for the
objects still to fetch; a file appears under its final name only once it is complete and its gzip
stream reads to the end with matching CRC and length, so anything found there later is whole.
On object storage each file is verified in a local scratch folder first, then uploaded: the object
appears only when its upload completes.
"""

from __future__ import annotations

import gzip
import os
import tempfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from airflow_provider_canvas.canvas_data.hooks.models import DapJob, object_file_name
from airflow_provider_canvas.common.download import AuthorisedGet, StreamingDownload
from airflow_provider_canvas.common.files import fsync_dir
from airflow_provider_canvas.common.locations import copy_to_object_store
from airflow_provider_canvas.common.log import Log
from airflow_provider_canvas.common.retry import RetryPolicy
from airflow_provider_canvas.exceptions import DapObjectError, DownloadError

_CHUNK = 2**20
#: How often in a row the URLs of the objects left are asked for again after a download failed. A
#: saved object resets the count: a long job outlives many URL lifetimes and still makes progress.
URL_REFRESHES = 3


@dataclass(frozen=True)
class PulledObject:
    """One object on disk: its name in the batch folder, compressed size and JSON Lines records."""

    object_id: str
    name: str
    size: int
    records: int


def verify_gzip(path: Any) -> int:
    """Read ``path`` (local or an ObjectStoragePath) to its end as gzip; count lines.

    Python checks each gzip member's CRC-32 and length.

    Raises :class:`DapObjectError` when the file is cut short or corrupt.
    """
    records = 0
    last = b"\n"
    try:
        with path.open("rb") as raw, gzip.GzipFile(fileobj=raw, mode="rb") as stream:
            while chunk := stream.read(_CHUNK):
                records += chunk.count(b"\n")
                last = chunk[-1:]
    except (OSError, EOFError, zlib.error) as err:
        raise DapObjectError(f"{path.name} is not intact gzip ({type(err).__name__}: {err})") from None
    return records + (last != b"\n")


def unique_names(object_ids: Sequence[str]) -> list[str]:
    """A file name per object, as DAP named it, numbered where two would clash."""
    names: list[str] = []
    for index, object_id in enumerate(object_ids):
        name = object_file_name(object_id, index)
        names.append(f"{index:05d}-{name}" if name in names else name)
    return names


class DapObjectDownloader:
    """Downloads every object of one job into a folder, asking for new URLs when old ones fail.

    :param urls_for: the hook's ``POST /dap/object/url`` (object ids -> presigned URLs).
    :param session: plain requests to the storage host (no bearer token).
    """

    def __init__(
        self,
        *,
        urls_for: Callable[[Sequence[str]], dict[str, str]],
        session: requests.Session,
        authorised_get: AuthorisedGet,
        base_url: str,
        timeout: tuple[float, float],
        retry: RetryPolicy,
        log: Log,
    ) -> None:
        self._urls_for = urls_for
        self.log = log
        self._engine = StreamingDownload(
            base_url=base_url,
            authorised_get=authorised_get,
            session=session,
            timeout=timeout,
            retry=retry,
            log=log,
        )

    def download(self, job: DapJob, directory: Any, *, attempts: int = 5) -> list[PulledObject]:
        """Into ``directory``: a local ``Path``, or an ObjectStoragePath (each file staged locally first)."""
        if isinstance(directory, Path):
            directory.mkdir(parents=True, exist_ok=True)
            return self._download(job, directory, directory, attempts)
        with tempfile.TemporaryDirectory(prefix="dap-objects-") as scratch:
            return self._download(job, directory, Path(scratch), attempts)

    def _download(self, job: DapJob, directory: Any, scratch: Path, attempts: int) -> list[PulledObject]:
        names = unique_names(job.objects)
        pulled: dict[str, PulledObject] = {}
        for object_id, name in zip(job.objects, names, strict=True):
            final = directory / name
            if final.exists():  # only verified files get this name: a re-run after a crash keeps them
                pulled[object_id] = PulledObject(object_id, name, final.stat().st_size, verify_gzip(final))
        todo = [o for o in job.objects if o not in pulled]
        self.log.info(
            "Job %s: %d object(s) to download into %s (%d already there)",
            job.id,
            len(todo),
            directory,
            len(pulled),
        )
        urls = self._urls_for(todo)
        refreshes = in_a_row = 0
        for number, object_id in enumerate(todo, 1):
            name = names[job.objects.index(object_id)]
            while True:
                try:
                    pulled[object_id] = self._fetch(object_id, urls[object_id], scratch, name, attempts)
                    in_a_row = 0
                    break
                except (DownloadError, DapObjectError) as err:
                    if in_a_row >= URL_REFRESHES:
                        raise DapObjectError(
                            f"job {job.id}: object {number} of {len(todo)} ({name}) could not be downloaded "
                            f"with {in_a_row} new URLs in a row ({err}); nothing was recorded: the next "
                            "run of the pull starts a new job from the same watermark"
                        ) from None
                    refreshes += 1
                    in_a_row += 1
                    left = todo[number - 1 :]
                    self.log.warning(
                        "%s: %s; asking DAP for new URLs of the %d object(s) left", name, err, len(left)
                    )
                    urls.update(self._urls_for(left))
            if scratch != directory:  # verified locally: now the upload, which appears only whole
                copy_to_object_store(scratch / name, directory / name)
                (scratch / name).unlink()
            self.log.info(
                "Job %s: object %d of %d saved (%s, %d records)",
                job.id,
                number,
                len(todo),
                name,
                pulled[object_id].records,
            )
        if refreshes:
            self.log.info("Job %s: %d new URL set(s) asked for in all", job.id, refreshes)
        return [pulled[o] for o in job.objects]

    def _fetch(self, object_id: str, url: str, directory: Path, name: str, attempts: int) -> PulledObject:
        # Downloaded complete under a hidden name, verified, then renamed: the final name means intact.
        unverified = directory / f".{name}.unverified"
        try:
            size = self._engine.fetch(url, unverified, attempts=attempts).size
            records = verify_gzip(unverified)
            os.replace(unverified, directory / name)
        finally:
            unverified.unlink(missing_ok=True)
        fsync_dir(directory)
        return PulledObject(object_id, name, size, records)
