"""Where output goes: a local folder or an object store (``ObjectStoragePath``), and its URI.

Both products write pulled files to a location a DAG names; this says whether it is local (atomic
renames and fsync) and what URI its Asset gets.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

_COPY_CHUNK = 2**20


def local_path(location: str | os.PathLike[str] | ObjectStoragePath) -> Path | None:
    """The local filesystem path of ``location``, or None when it is on an object store."""
    if isinstance(location, (str, os.PathLike)):
        text = str(location)
        if "://" in text and not text.startswith("file://"):
            return None
    elif location.protocol in ("", "file", "local"):
        text = str(location.path)
    else:
        return None
    return Path(text.removeprefix("file://")).expanduser().resolve()


def object_store_path(location: str | os.PathLike[str] | ObjectStoragePath) -> ObjectStoragePath:
    """``location`` (not local) as an ObjectStoragePath: a URL given as text becomes one."""
    from airflow.sdk import ObjectStoragePath

    return location if isinstance(location, ObjectStoragePath) else ObjectStoragePath(str(location))


def location_uri(location: str | os.PathLike[str] | ObjectStoragePath) -> str:
    path = local_path(location)
    return path.as_uri() if path is not None else str(location)


def storage_root(location: str | os.PathLike[str] | ObjectStoragePath) -> Path | ObjectStoragePath:
    """A local ``Path``, or an ObjectStoragePath for a URL such as ``s3://conn_id@bucket/prefix``.

    Templated locations render to text, so a URL given as text is made an ObjectStoragePath here
    (its connection, if any, named before the ``@``).
    """
    path = local_path(location)
    return path if path is not None else object_store_path(location)


def copy_to_object_store(local: Path, target: ObjectStoragePath) -> None:
    """Stream a finished local file to an object store; the object appears when the upload ends."""
    with open(local, "rb") as src:
        dst = target.open("wb")
        try:
            shutil.copyfileobj(src, dst, _COPY_CHUNK)
        except BaseException:
            # Closing would commit what was written so far (fsspec files commit on close).
            discard = getattr(dst, "discard", None)
            if discard is not None:
                discard()
            raise
        dst.close()
