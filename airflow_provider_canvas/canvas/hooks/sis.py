"""The Canvas calls of SIS imports and account reports, mixed into CanvasHook: the only code that sends them.

The upload is the raw ZIP as the request body (``Content-Type: application/zip``, ``extension=zip``,
the options in the query string), a form the SIS Imports API documents beside multipart: the file is
streamed from disk by requests, never read whole into memory, and a repeated send (after a refused,
refreshed token) starts again from the first byte.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import quote

from airflow_provider_canvas.canvas.hooks.paths import account_path
from airflow_provider_canvas.exceptions import LmsConfigurationError

if TYPE_CHECKING:
    from airflow_provider_canvas.common.download import DownloadedFile

_UPLOAD_BLOCK = 2**20

SCOPE_CREATE_SIS_IMPORT = "url:POST|/api/v1/accounts/:account_id/sis_imports"
SCOPE_LIST_SIS_IMPORTS = "url:GET|/api/v1/accounts/:account_id/sis_imports"
SCOPE_GET_SIS_IMPORT = "url:GET|/api/v1/accounts/:account_id/sis_imports/:id"
SCOPE_START_REPORT = "url:POST|/api/v1/accounts/:account_id/reports/:report"
SCOPE_GET_REPORT = "url:GET|/api/v1/accounts/:account_id/reports/:report/:id"

#: The documented options of ``POST sis_imports`` this provider passes through (booleans as "true").
SIS_IMPORT_OPTIONS = (
    "import_type", "batch_mode", "batch_mode_term_id", "multi_term_batch_mode",
    "diffing_data_set_identifier", "diffing_remaster_data_set", "diffing_drop_status",
    "diffing_user_remove_status", "batch_mode_enrollment_drop_status", "change_threshold",
    "diff_row_count_threshold", "skip_deletes", "override_sis_stickiness", "add_sis_stickiness",
    "clear_sis_stickiness", "update_sis_id_if_login_claimed",
)  # fmt: skip


def sis_import_params(options: Mapping[str, Any]) -> dict[str, str]:
    """The query string of an upload: known options only, booleans as Canvas reads them, None left out."""
    unknown = sorted(set(options) - set(SIS_IMPORT_OPTIONS))
    if unknown:
        raise LmsConfigurationError(
            f"unknown SIS import option(s) {unknown}; known: {list(SIS_IMPORT_OPTIONS)}"
        )
    params = {"import_type": "instructure_csv", "extension": "zip"}
    for name, value in options.items():
        if value is None or value is False:
            continue
        params[name] = "true" if value is True else str(value)
    return params


class UploadBody:
    """A file as the body of a request, read in 1 MiB blocks.

    urllib3 asks a file body for 16 KiB at a time: 65,000 reads and sends per GB, which a loaded
    machine feels. This hands it 1 MiB per read instead (memory stays at one block). ``len`` and
    ``tell`` give requests the Content-Length; ``seek`` lets a repeated send start over.
    """

    def __init__(self, file: BinaryIO) -> None:
        self._file = file
        self._size = os.fstat(file.fileno()).st_size

    def __len__(self) -> int:
        return self._size

    def read(self, amount: int | None = -1) -> bytes:
        return self._file.read(_UPLOAD_BLOCK if amount is None or amount < 0 else max(amount, _UPLOAD_BLOCK))

    def tell(self) -> int:
        return self._file.tell()

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._file.seek(offset, whence)


class CanvasSisCalls:
    """SIS imports, account reports and file downloads; the host class provides ``request``,
    ``paginate``, ``download`` and ``_account_path`` (CanvasHook)."""

    if TYPE_CHECKING:
        from airflow_provider_canvas.canvas.hooks.canvas import CanvasHook as _Host

        request = _Host.request
        paginate = _Host.paginate
        get_json = _Host.get_json
        download = _Host.download

    def start_sis_import(
        self, account_id: int | str, zip_path: str | os.PathLike[str], options: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Upload a SIS ZIP (streamed from disk) and return the new import as Canvas describes it.

        Not retried after it may have reached Canvas: a lost answer is for the caller to look up
        (:meth:`list_sis_imports`), never to send twice.
        """
        with open(zip_path, "rb") as file:
            response = self.request(
                "POST",
                account_path(account_id, "/sis_imports"),
                params=sis_import_params(options),
                data=UploadBody(file),
                headers={"Content-Type": "application/zip"},
                scope=SCOPE_CREATE_SIS_IMPORT,
            )
        return dict(response.json())

    def get_sis_import(self, account_id: int | str, import_id: int) -> dict[str, Any]:
        return dict(
            self.get_json(
                account_path(account_id, f"/sis_imports/{int(import_id)}"), scope=SCOPE_GET_SIS_IMPORT
            )
        )

    def list_sis_imports(
        self, account_id: int | str, *, created_since: str | None = None
    ) -> Iterator[dict[str, Any]]:
        """The account's imports, newest first (``created_since``: ISO 8601, exclusive)."""
        params = {"created_since": created_since} if created_since else {}
        return self.paginate(
            account_path(account_id, "/sis_imports"), params, scope=SCOPE_LIST_SIS_IMPORTS, root="sis_imports"
        )

    def start_report(
        self, account_id: int | str, report: str, parameters: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Start an account report (``provisioning_csv``, ``sis_export_csv``, ...); ``parameters[...]``."""
        form = {f"parameters[{key}]": _form_value(value) for key, value in (parameters or {}).items()}
        response = self.request(
            "POST",
            account_path(account_id, f"/reports/{_report_segment(report)}"),
            data=form,
            scope=SCOPE_START_REPORT,
        )
        return dict(response.json())

    def get_report(self, account_id: int | str, report: str, report_id: int) -> dict[str, Any]:
        path = account_path(account_id, f"/reports/{_report_segment(report)}/{int(report_id)}")
        return dict(self.get_json(path, scope=SCOPE_GET_REPORT))

    def download_attachment(
        self, attachment: Mapping[str, Any], destination: str | os.PathLike[str]
    ) -> DownloadedFile:
        """A Canvas file (``errors_attachment``, a report's ``attachment``), of its announced ``size``.

        Its ``url`` answers with a redirect to file storage on another host, which gets no token.
        """
        size = attachment.get("size")
        return self.download(
            str(attachment["url"]),
            destination,
            expected_size=int(size) if size is not None else None,
            size_name="the attachment's size",
        )


def _form_value(value: Any) -> str:
    return "true" if value is True else "false" if value is False else str(value)


def _report_segment(report: str) -> str:
    if not report or "/" in report:
        raise LmsConfigurationError(f"a report name like 'provisioning_csv' is needed, got {report!r}")
    return quote(report, safe="")
