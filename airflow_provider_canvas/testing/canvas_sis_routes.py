"""The emulator's Canvas routes for SIS imports, account reports and file downloads.

Raw and multipart uploads as the SIS Imports API documents them (``extension`` or the Content-Type
says what a raw body is), SIS imports only on root accounts, ``GET sis_imports`` wrapped in
``{"sis_imports": [...]}`` and paged, reports under ``/reports/:report``.
"""

from __future__ import annotations

import email.parser
import email.policy
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from airflow_provider_canvas.testing.canvas_reports import AccountReports, CanvasFiles
from airflow_provider_canvas.testing.canvas_sis import SisImports
from airflow_provider_canvas.testing.primitives import Request, Response, json_response

_Resolve = Callable[[str], Any]
_ROOT_ONLY = {"errors": ["SIS imports can only be executed on root accounts"]}
_NOT_FOUND = {"errors": [{"message": "The specified resource does not exist."}]}


class SisRoutes:
    """Handlers with the ``(request, grant, params)`` signature of the Canvas emulator's routes."""

    def __init__(
        self, resolve: _Resolve, sis: SisImports, reports: AccountReports, files: CanvasFiles
    ) -> None:
        self._resolve = resolve
        self.sis = sis
        self.reports = reports
        self.files = files

    def _root(self, ref: str) -> Any:
        account = self._resolve(ref)
        if account is None:
            return json_response(404, _NOT_FOUND)
        if account.parent_account_id is not None:
            return json_response(400, _ROOT_ONLY)
        return account

    def create_import(self, request: Request, grant: Any, params: dict[str, str]) -> Response:
        account = self._root(params["account_id"])
        if isinstance(account, Response):
            return account
        ctype = (request.header("content-type") or "").split(";")[0].strip().lower()
        fields = {k: v[-1] for k, v in request.query.items() if k != "access_token"}
        body: bytes | str
        if ctype == "multipart/form-data":
            if request.body_path is not None:
                return json_response(
                    413,
                    {
                        "errors": [
                            {
                                "message": "the emulator takes multipart uploads up "
                                "to 8 MiB; post the raw body (extension=zip)"
                            }
                        ]
                    },
                )
            form, attachment = _multipart(request)
            fields.update(form)
            if attachment is None:
                return json_response(400, {"error": True, "error_message": "Missing attachment"})
            body = attachment
        else:
            fields.update({k: v[-1] for k, v in request.form.items()})
            body = request.body_path if request.body_path is not None else request.body
            request.body_path = None  # taken over by the import
        if fields.get("import_type", "instructure_csv") != "instructure_csv":
            return json_response(500, {"errors": [{"message": "invalid import type parameter"}]})
        if (
            _true(fields.get("batch_mode"))
            and not fields.get("batch_mode_term_id")
            and not fields.get("multi_term_batch_mode")
        ):
            return json_response(
                400, {"message": "Batch mode specified, but the given batch_mode_term_id cannot be found."}
            )
        if _true(fields.get("multi_term_batch_mode")) and not fields.get("change_threshold"):
            return json_response(
                400, {"message": "change_threshold is required to use multi term_batch mode."}
            )
        drop = fields.get("diffing_drop_status")
        if drop and drop not in ("deleted", "completed", "inactive"):
            return json_response(400, {"message": "Invalid diffing_drop_status"})
        sis = self.sis.create(account.id, grant.user_id, body, fields, ctype)
        if self.sis.lose_next_answer:
            self.sis.lose_next_answer = False
            return json_response(502, {"errors": [{"message": "Bad Gateway"}]})
        return json_response(200, self.sis.to_json(sis))

    def get_import(self, request: Request, grant: Any, params: dict[str, str]) -> Response:
        sis = self._import(params)
        return sis if isinstance(sis, Response) else json_response(200, self.sis.to_json(sis))

    def abort_import(self, request: Request, grant: Any, params: dict[str, str]) -> Response:
        sis = self._import(params)
        if isinstance(sis, Response):
            return sis
        self.sis.abort(sis)
        return json_response(200, self.sis.to_json(sis))

    def _import(self, params: dict[str, str]) -> Any:
        account = self._root(params["account_id"])
        if isinstance(account, Response):
            return account
        sis = self.sis.imports.get(int(params["id"])) if params["id"].isdigit() else None
        if sis is None or sis.account_id != account.id:
            return json_response(404, _NOT_FOUND)
        return sis

    def list_imports(self, request: Request, grant: Any, params: dict[str, str]) -> Response:
        account = self._root(params["account_id"])
        if isinstance(account, Response):
            return account
        since = request.arg("created_since")
        states = set(request.query.get("workflow_state[]", []) + request.query.get("workflow_state", []))
        found = []
        for sis in sorted(self.sis.imports.values(), key=lambda s: -s.id):  # newest first, as Canvas
            if sis.account_id != account.id:
                continue
            body = self.sis.to_json(sis)
            if since and body["created_at"] <= since.replace("+00:00", "Z"):
                continue
            if states and body["workflow_state"] not in states:
                continue
            found.append(body)
        page, links = _page(request, found)
        return json_response(200, {"sis_imports": page}, links)

    def start_report(self, request: Request, grant: Any, params: dict[str, str]) -> Response:
        account = self._resolve(params["account_id"])
        if account is None:
            return json_response(404, _NOT_FOUND)
        values: dict[str, str] = {}
        body = request.json()
        if isinstance(body, dict) and isinstance(body.get("parameters"), dict):
            values.update({k: str(v) for k, v in body["parameters"].items()})
        for source in (request.query, request.form):
            for key, vals in source.items():
                match = re.fullmatch(r"parameters\[(\w+)\]", key)
                if match:
                    values[match.group(1)] = vals[-1]
        report = self.reports.start(account.id, params["report"], values)
        return json_response(200, self.reports.to_json(report))

    def get_report(self, request: Request, grant: Any, params: dict[str, str]) -> Response:
        account = self._resolve(params["account_id"])
        report = self.reports.reports.get(int(params["id"])) if params["id"].isdigit() else None
        if (
            account is None
            or report is None
            or report.account_id != account.id
            or report.report != params["report"]
        ):
            return json_response(404, _NOT_FOUND)
        return json_response(200, self.reports.to_json(report))

    def download(self, request: Request) -> Response:
        match = re.fullmatch(r"/files/(\d+)/download", request.path)
        found = self.files.download(request, int(match.group(1))) if match else None
        return found if found is not None else json_response(404, _NOT_FOUND)


def _true(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes", "on")


def _multipart(request: Request) -> tuple[dict[str, str], bytes | None]:
    head = f"Content-Type: {request.header('content-type')}\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + request.body)
    fields: dict[str, str] = {}
    attachment = None
    for part in message.iter_parts():  # type: ignore[attr-defined]
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True) or b""
        if name == "attachment":
            attachment = payload
        elif name:
            fields[str(name)] = payload.decode("utf-8", "replace")
    return fields, attachment


def _page(request: Request, items: list[Any]) -> tuple[list[Any], dict[str, str]]:
    per_page = min(int(request.arg("per_page") or 10), 100)
    page = int(request.arg("page") or 1) if (request.arg("page") or "1").isdigit() else 1
    start = (page - 1) * per_page
    links = {}
    if start + per_page < len(items):
        kept = [
            (k, v)
            for k, vs in request.query.items()
            if k not in ("page", "per_page", "access_token")
            for v in vs
        ]
        query = urlencode([*kept, ("page", str(page + 1)), ("per_page", str(per_page))])
        links["Link"] = f'<http://{request.header("host")}{request.path}?{query}>; rel="next"'
    return items[start : start + per_page], links
