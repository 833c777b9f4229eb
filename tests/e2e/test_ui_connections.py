"""The user's first hour in a real browser: the connection forms, a connection made in the form, Test.

Headless Chromium (Debian's ``chromium``) driven by Playwright against the real api-server of the
session's LocalAirflow. Every step leaves a screenshot in ``test-artifacts/ui/`` (not committed).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pendulum
import pytest

from airflow_provider_canvas.get_provider_info import CONN_FIELDS
from airflow_provider_canvas.testing import LmsEmulator
from airflow_provider_canvas.testing.dap import DapEmulator
from airflow_provider_canvas.testing.local_airflow import LocalAirflow

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "test-artifacts" / "ui"
HOOK_NAMES = {"canvas": "Canvas LMS", "brightspace": "D2L Brightspace", "canvas_data": "Canvas Data 2 (DAP)"}
CLIENT_ID, CLIENT_SECRET = "ui-client", "ui-client-secret-value"
# Flags for a root user on a machine without outside network (Chromium's background calls are refused).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "the browser tests need Debian's chromium: apt-get install -y chromium (.ci/run does)"
    from playwright.sync_api import sync_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: object) -> Iterator[object]:
    context = browser.new_context(viewport={"width": 1400, "height": 1500})
    page = context.new_page()
    page.set_default_timeout(30_000)
    yield page
    context.close()


@pytest.fixture
def emulator() -> Iterator[LmsEmulator]:
    with LmsEmulator() as emu:
        emu.brightspace.revoke_family_on_reuse = True  # strict: a reused refresh token ends the chain
        emu.canvas.add_account(1, "Root")
        for side in (emu.canvas, emu.brightspace):
            side.register_client(CLIENT_ID, CLIENT_SECRET)
        yield emu


def shot(page: object, name: str) -> None:
    page.wait_for_timeout(700)  # accordions and toasts animate in: picture them settled
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def open_add_form(page: object, airflow: LocalAirflow, conn_type: str) -> None:
    page.goto(f"{airflow.api_url}/connections")
    page.get_by_role("button", name="Add Connection").click()
    page.get_by_role("combobox").click()
    page.get_by_role("option", name=HOOK_NAMES[conn_type], exact=True).click()


def open_extra_fields(page: object) -> None:
    page.get_by_text("Extra Fields", exact=True).click()
    page.locator("[name=element_lock_conn_id]").wait_for()


def row(page: object, conn_id: str) -> object:
    """The connection list's row of exactly ``conn_id``."""
    return page.get_by_role("row").filter(has=page.get_by_role("cell", name=conn_id, exact=True))


def field(page: object, name: str) -> object:
    return page.locator(f"[name=element_{name}]")


@pytest.mark.parametrize("conn_type", ["canvas", "brightspace"])
def test_the_add_form_shows_every_field_with_its_default(local_airflow, page, conn_type):
    open_add_form(page, local_airflow, conn_type)
    assert page.get_by_text("Client ID", exact=True).is_visible()  # login and password, relabelled
    assert page.get_by_text("Client secret", exact=True).is_visible()
    assert page.locator("input[name=port]").count() == 0  # hidden: neither API has a port
    open_extra_fields(page)
    shot(page, f"01_add_form_{conn_type}")

    for name, spec in CONN_FIELDS[conn_type].items():
        assert page.get_by_text(spec["label"], exact=True).is_visible(), name
        default = spec["schema"].get("default")
        assert field(page, name).input_value() == ("" if default is None else str(default)), name
    form = page.get_by_role("dialog")
    shown = [form.inner_text(), *(i.input_value() for i in form.locator("input").all())]
    assert not [text for text in shown if "***" in text or "null" in text.split()]
    if conn_type == "brightspace":
        assert field(page, "oauth_url").input_value() == "https://auth.brightspace.com/core/connect/token"
        assert "datasets:bds:read" in field(page, "scopes").input_value().split()


def test_a_brightspace_connection_made_in_the_form_works_in_tasks(local_airflow, page, emulator):
    issued = emulator.brightspace.issue_tokens(CLIENT_ID)
    open_add_form(page, local_airflow, "brightspace")
    page.locator("input[name=connection_id]").fill("ui_brightspace")
    page.locator("input[name=host]").fill(emulator.url)
    page.locator("input[name=login]").fill(CLIENT_ID)
    page.locator("input[name=password]").fill(CLIENT_SECRET)
    open_extra_fields(page)
    # What a person copies from the OAuth app and the first authorization; the rest keeps its default.
    field(page, "refresh_token").fill(issued.refresh_token)
    field(page, "oauth_url").fill(f"{emulator.url}/core/connect/token")
    shot(page, "02_brightspace_form_filled")
    page.get_by_role("button", name="Save").click()
    row(page, "ui_brightspace").wait_for()
    shot(page, "03_brightspace_saved")

    # 8 parallel tasks on it, under the real scheduler (ORM blocked): one refresh, nothing reused.
    local_airflow.wait_for_dag("token_refresh_parallel")
    conf = {"conn_id": "ui_brightspace", "platform": "brightspace", "separate_hosts": False}
    run_id = local_airflow.trigger("token_refresh_parallel", conf)
    state = local_airflow.wait_for_run("token_refresh_parallel", run_id, timeout=240)
    instances = local_airflow.task_instances("token_refresh_parallel", run_id)
    assert state == "success", [(ti["map_index"], ti["state"]) for ti in instances]
    assert [ti["try_number"] for ti in instances] == [1] * 8  # first try, every task
    assert emulator.refresh_count("brightspace") == 1
    assert emulator.consumed_presentations("brightspace") == 0

    saved = local_airflow.get_connection("ui_brightspace")["extra_dejson"]
    assert saved["refresh_token"] != issued.refresh_token
    assert pendulum.parse(saved["expires_at"]) > pendulum.now("UTC").add(minutes=50)
    # The lock file is under this installation's AIRFLOW_HOME (state_dir's default).
    assert list((local_airflow.home / "canvas_provider" / "locks").glob("ui_brightspace*.lock"))

    # The edit form: tokens masked, and every field offered (the save wrote them all).
    page.reload()  # the list still holds the connection as the form saved it
    row(page, "ui_brightspace").get_by_role("button", name="Edit Connection").click()
    open_extra_fields(page)
    shot(page, "04_brightspace_edit_form")
    for name in ("refresh_token", "access_token"):
        assert field(page, name).input_value() == "***"
        assert field(page, name).get_attribute("type") == "password"
    for name in CONN_FIELDS["brightspace"]:
        assert field(page, name).count() == 1, name
    assert field(page, "oauth_url").input_value() == f"{emulator.url}/core/connect/token"


@pytest.mark.parametrize("conn_type", ["canvas", "brightspace"])
def test_the_test_button_reports_the_providers_answer(local_airflow, page, emulator, conn_type):
    live, empty = f"ui_test_{conn_type}", f"ui_test_{conn_type}_no_token"
    issued = getattr(emulator, conn_type).issue_tokens(CLIENT_ID)
    for conn_id, extra in ((live, emulator.connection_extra(conn_type, issued, expired=False)), (empty, {})):
        local_airflow.add_connection(
            conn_id, conn_type, host=emulator.url, login=CLIENT_ID, password=CLIENT_SECRET, extra=extra
        )
    page.goto(f"{local_airflow.api_url}/connections")

    row(page, live).get_by_role("button", name="Test Connection").click()
    success = page.get_by_text("Test Connection Successful").locator("xpath=..")
    success.wait_for()
    shot(page, f"05_test_button_{conn_type}_ok")
    assert f"{HOOK_NAMES[conn_type]} accepts the stored access token" in success.inner_text()

    page.mouse.move(0, 0)  # as a person would: the first button's tooltip covers the row below
    page.locator("[data-scope=tooltip][data-part=positioner]").first.wait_for(state="hidden")
    row(page, empty).get_by_role("button", name="Test Connection").click()
    failure = page.get_by_text("Test Connection Failed").locator("xpath=..")
    failure.wait_for()
    shot(page, f"06_test_button_{conn_type}_no_token")
    message = failure.inner_text()
    assert "This connection holds no access token" in message
    assert "never refreshes tokens" in message
    assert emulator.refresh_count(conn_type) == 0  # the Test button never spends a refresh token


def test_the_test_button_of_a_canvas_data_connection_logs_in_to_dap(local_airflow, page):
    """Right client ID and secret: DAP's answer; a wrong secret: what to fix, never the secret."""
    right, wrong = "ui_test_canvas_data", "ui_test_canvas_data_wrong_secret"
    client_id, secret = "us-east-1#ui-dap-client", "ui-dap-secret-value"
    with DapEmulator(
        rows={"accounts": 2, "users": 2, "courses": 2, "enrollments": 2}, catalogue=False
    ) as dap:
        dap.register_client(client_id, secret)
        for conn_id, password in ((right, secret), (wrong, "not-the-dap-secret")):
            local_airflow.add_connection(
                conn_id, "canvas_data", host=dap.url, login=client_id, password=password, extra={}
            )
        page.goto(f"{local_airflow.api_url}/connections")

        row(page, right).get_by_role("button", name="Test Connection").click()
        success = page.get_by_text("Test Connection Successful").locator("xpath=..")
        success.wait_for()
        shot(page, "07_test_button_canvas_data_ok")
        assert f"DAP at {dap.url} accepted the client ID and secret" in success.inner_text()

        page.mouse.move(0, 0)  # the first button's tooltip covers the row below
        page.locator("[data-scope=tooltip][data-part=positioner]").first.wait_for(state="hidden")
        row(page, wrong).get_by_role("button", name="Test Connection").click()
        failure = page.get_by_text("Test Connection Failed").locator("xpath=..")
        failure.wait_for()
        shot(page, "08_test_button_canvas_data_wrong_secret")
        message = failure.inner_text()
        assert "DAP refused the client ID and secret (HTTP 401" in message
        assert "identity.instructure.com" in message and "Bad Request" not in message
        assert "not-the-dap-secret" not in message
        # One login per press, no job and no listing (both are rate-limited at DAP).
        assert [status for _, status in dap.logins] == [200, 401] and dap.job_requests == []
