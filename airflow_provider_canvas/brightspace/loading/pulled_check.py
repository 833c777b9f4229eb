"""Files a manifest lists that are not extracts (kept before downloads were checked): found, fetched again.

Before downloads were checked, a body of the right length that was no ZIP (a proxy's or storage
host's page) was renamed into place and recorded, and every later load failed on it. Each pull
now looks at every file its manifest lists, cheaply (size and central directory, never the data),
drops the bad ones from the manifest and fetches them again; one Brightspace no longer offers is
named with the exact file and manifest entry to delete.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

from airflow_provider_canvas.brightspace.hooks.models import BdsExtract
from airflow_provider_canvas.brightspace.loading.pull_state import MANIFEST_NAME, DataSetFolder, PulledExtract
from airflow_provider_canvas.common.zip_check import quick_check
from airflow_provider_canvas.exceptions import ExtractFormatError, LmsError

log = logging.getLogger(__name__)


def file_problem(folder: DataSetFolder, name: str, size: int | None) -> str | None:
    """Why the file ``name`` in ``folder`` is not a usable extract of ``size`` bytes, or None when it is."""
    found = folder.size_of(name)
    if found is None:
        return "the file is missing"
    if size is not None and found != size:
        return f"{found} bytes on disk, but {size} were recorded"
    try:
        with folder.open(name) as source:
            quick_check(source, size, name)
    except ExtractFormatError as err:
        return str(err).removeprefix(f"{name}: ")
    return None


def recheck_pulled(
    folder: DataSetFolder, pulled: Sequence[PulledExtract], available: Sequence[BdsExtract]
) -> tuple[list[PulledExtract], list[BdsExtract]]:
    """The manifest without its bad files (saved so), and the extracts to fetch again in their place.

    Costs one ``stat`` and a read of the central directory per file listed.

    Raises :class:`LmsError` naming each file and manifest entry to delete when a bad file is one
    Brightspace no longer lists (a differential past its retention), since it cannot be fetched.
    """
    # A missing file is left alone: pruning loaded extracts is the owner's business, not corruption.
    present = [e for e in pulled if folder.size_of(e.file) is not None]
    bad = {e.file: problem for e in present if (problem := file_problem(folder, e.file, e.size))}
    if not bad:
        return list(pulled), []
    offered = {folder.file_name(extract): extract for extract in available}
    lost = [entry for entry in pulled if entry.file in bad and entry.file not in offered]
    if lost:
        manifest = f"{folder.uri}/{MANIFEST_NAME}"
        details = "; ".join(
            f"{folder.uri}/{e.file} ({bad[e.file]}): delete it and the entry "
            f"{json.dumps({'file': e.file, 'created': e.created})} of {manifest}"
            for e in lost
        )
        raise LmsError(
            f"{folder.data_set}: {len(lost)} file(s) the manifest lists are not valid extracts and "
            f"Brightspace no longer offers them, so they cannot be fetched again: {details}. Then pull "
            "again; the changes they held are lost unless a newer full extract is pulled (full='newer')."
        )
    kept = [entry for entry in pulled if entry.file not in bad]
    for name, problem in bad.items():
        log.warning("%s/%s is not a valid extract (%s): fetching it again", folder.uri, name, problem)
    folder.write_manifest(kept)  # before the bad files go: a crash in between leaves no entry without file
    for name in bad:
        target = folder.path / name
        if target.exists():
            target.unlink()
    return kept, sorted((offered[name] for name in bad), key=lambda e: e.created)


def merge_plans(*plans: Sequence[BdsExtract]) -> list[BdsExtract]:
    """The extracts of every plan once each, oldest first."""
    unique = {(e.bds_type, e.created, e.download_link): e for plan in plans for e in plan}
    return sorted(unique.values(), key=lambda e: e.created)
