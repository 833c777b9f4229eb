"""The emulator driven the way D2L's published sample client does it, with plain requests (not our hook).

Written from D2L's documentation and its bds-headless-client-example (1.2.0): trade the refresh token in
with HTTP Basic client auth and the ``datahub:dataexports:*`` scope (keeping the rotated one), read the
``dataExport/bds`` listing page by page through ``NextPageUrl``, map ``PluginId`` to ``DownloadLink``,
and download the data sets by the plugin IDs the sample hard-codes, through the 302 to storage. Then,
as the sample does, COPY each CSV into a typed PostgreSQL table.
"""

from __future__ import annotations

import io
import uuid
import zipfile
from urllib.parse import urlsplit

import psycopg
import pytest
import requests
from lms_fixtures import CLIENT_ID, CLIENT_SECRET, dsn
from psycopg import sql
from requests.auth import HTTPBasicAuth

from airflow_provider_canvas.brightspace.loading.catalogue import CATALOGUE, TEXT

API_VERSION = "1.18"  # the sample's
TIMEOUT = 10
SCOPE = "datahub:dataexports:*"
# The sample's FULL_DATA_SET_METADATA and DIFF_DATA_SET_METADATA: plugin ID -> its table.
FULL_DATA_SET_METADATA = [
    ("07a9e561-e22f-4e82-8dd6-7bfb14c91776", "org_units"),
    ("793668a8-2c58-4e5e-b263-412d28d5703f", "grade_objects"),
    ("1d6d722e-b572-456f-97c1-d526570daa6b", "users"),
    ("9d8a96b4-8145-416d-bd18-11402bc58f8d", "grade_results"),
    ("533f84c8-b2ad-4688-94dc-c839952e9c4f", "user_enrollments"),
]
DIFF_DATA_SET_METADATA = [("a78735f2-7210-4a57-aac1-e0f6bd714349", "user_enrollments")]
DATA_SETS = {
    "org_units": "Organizational Units",
    "grade_objects": "Grade Objects",
    "users": "Users",
    "grade_results": "Grade Results",
    "user_enrollments": "User Enrollments",
}
ROWS = 25


def trade_in_refresh_token(base: str, refresh_token: str) -> dict:
    # RFC 6749 section 6: form-encoded, client authenticated with HTTP Basic.
    response = requests.post(
        f"{base}/core/connect/token",
        data={"grant_type": "refresh_token", "refresh_token": refresh_token, "scope": SCOPE},
        auth=HTTPBasicAuth(CLIENT_ID, CLIENT_SECRET),
        timeout=TIMEOUT,
    )
    assert response.status_code == 200, response.text
    return response.json()


def get_with_auth(url: str, access_token: str) -> requests.Response:
    response = requests.get(url, headers={"Authorization": f"Bearer {access_token}"}, timeout=TIMEOUT)
    assert response.status_code == 200, (url, response.status_code)
    return response


def plugin_link_mapping(base: str, access_token: str) -> tuple[dict[str, str], int]:
    data_sets, pages = [], 0
    next_page_url = f"{base}/d2l/api/lp/{API_VERSION}/dataExport/bds"
    while next_page_url is not None:
        body = get_with_auth(next_page_url, access_token).json()
        data_sets += body["BrightspaceDataSets"]
        next_page_url = body["NextPageUrl"]
        pages += 1
    return {d["PluginId"]: d["DownloadLink"] for d in data_sets}, pages


def csv_of(response: requests.Response) -> tuple[str, str]:
    with zipfile.ZipFile(io.BytesIO(response.content)) as zipped_data_set:
        files = zipped_data_set.namelist()
        assert len(files) == 1
        return files[0], zipped_data_set.read(files[0]).decode("utf-8-sig")  # the sample reads it so


def copy_into_typed_table(db: psycopg.Connection, data_set: str, csv_text: str) -> int:
    """The sample's update_db: COPY the CSV (header skipped) into a table typed as documented."""
    header = csv_text.split("\r\n", 1)[0].split(",")
    types = CATALOGUE[data_set].columns
    table = sql.Identifier(f"sample_{uuid.uuid4().hex[:8]}")
    columns = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(types.get(c, TEXT))) for c in header
    )
    db.execute(sql.SQL("CREATE TEMP TABLE {} ({})").format(table, columns))
    with db.cursor().copy(sql.SQL("COPY {} FROM STDIN WITH (FORMAT CSV, HEADER)").format(table)) as copy:
        copy.write(csv_text)
    return db.execute(sql.SQL("SELECT count(*) FROM {}").format(table)).fetchone()[0]


@pytest.fixture
def seeded(emulator):
    bs = emulator.brightspace
    bs.register_client(CLIENT_ID, CLIENT_SECRET, ["datahub:dataexports:*"])
    bs.page_size = 4  # 10 listing entries: the sample must follow NextPageUrl
    extracts = [{"bds_type": "Full", "days_ago": 2, "rows_count": ROWS}]
    extracts.append({"bds_type": "Differential", "days_ago": 1, "rows_count": 5, "row_id_start": 21})
    bs.apply_seed({"data_sets": [{"name": name, "extracts": extracts} for name in DATA_SETS.values()]})
    return bs.issue_tokens(CLIENT_ID).refresh_token


def test_d2l_sample_client_runs_against_the_emulator(emulator, seeded):
    refresh_token = seeded
    base = emulator.url
    spent = []
    for run in range(3):  # the sample runs daily: each run keeps the rotated refresh token
        token_response = trade_in_refresh_token(base, refresh_token)
        assert token_response["refresh_token"] != refresh_token and token_response["token_type"] == "Bearer"
        assert token_response["scope"] == "datahub:dataexports:*"
        spent.append(refresh_token)
        refresh_token = token_response["refresh_token"]
        access_token = token_response["access_token"]

        plugin_to_link, pages = plugin_link_mapping(base, access_token)
        assert pages == 3 and len(plugin_to_link) == 10
        with psycopg.connect(dsn(), autocommit=True) as db:
            for plugin, table in FULL_DATA_SET_METADATA + DIFF_DATA_SET_METADATA:
                response = get_with_auth(plugin_to_link[plugin], access_token)
                # Through the 302 to storage on another host, which got no bearer token.
                assert [r.status_code for r in response.history] == [302]
                assert urlsplit(response.url).netloc != urlsplit(base).netloc
                assert "Authorization" not in response.request.headers
                member, csv_text = csv_of(response)
                data_set = DATA_SETS[table]
                assert member == f"{data_set.replace(' ', '')}.csv"
                rows = copy_into_typed_table(db, data_set, csv_text)
                assert rows == (5 if (plugin, table) in DIFF_DATA_SET_METADATA else ROWS), (run, table)

    # The older route the sample's first release used: the newest extract by plugin ID.
    users_plugin = FULL_DATA_SET_METADATA[2][0]
    users = get_with_auth(
        f"{base}/d2l/api/lp/{API_VERSION}/dataExport/bds/download/{users_plugin}", access_token
    )
    assert csv_of(users)[0] == "Users.csv" and [r.status_code for r in users.history] == [302]
    # Refresh tokens are single use: the one spent on the first run is dead.
    again = requests.post(
        f"{base}/core/connect/token",
        data={"grant_type": "refresh_token", "refresh_token": spent[0], "scope": SCOPE},
        auth=HTTPBasicAuth(CLIENT_ID, CLIENT_SECRET),
        timeout=TIMEOUT,
    )
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
