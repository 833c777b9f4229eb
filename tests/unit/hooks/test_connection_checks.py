"""What a person types into a connection is checked before any request: URLs and scope strings."""

from __future__ import annotations

import pytest

from airflow_provider_canvas.common.connection import check_base_url, is_loopback, parse_scopes
from airflow_provider_canvas.exceptions import LmsConfigurationError


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "127.8.9.10", "::1", "LOCALHOST"])
def test_loopback_hosts(host):
    assert is_loopback(host)


@pytest.mark.parametrize("host", [None, "", "canvas.example.edu", "10.0.0.5", "127.0.0.1.example.edu"])
def test_hosts_that_leave_the_machine(host):
    assert not is_loopback(host)


def test_https_and_loopback_http_are_accepted_without_a_trailing_slash():
    assert check_base_url("the host", "https://canvas.example.edu/", "e") == "https://canvas.example.edu"
    assert check_base_url("the host", "http://127.0.0.1:8765", "e") == "http://127.0.0.1:8765"
    assert check_base_url("the host", " http://localhost:1/ ", "e") == "http://localhost:1"


def test_plain_http_elsewhere_is_refused_with_the_url_to_type():
    with pytest.raises(LmsConfigurationError) as refused:
        check_base_url("the host of connection 'c'", "http://canvas.example.edu", "https://x")
    message = str(refused.value)
    assert "type 'https://canvas.example.edu' instead of 'http://canvas.example.edu'" in message
    assert message.startswith("the host of connection 'c' must use https")


@pytest.mark.parametrize("url", [None, "", "canvas.example.edu", "***", "ftp://canvas.example.edu"])
def test_a_url_without_a_scheme_is_refused_with_an_example(url):
    with pytest.raises(LmsConfigurationError, match=r"must be a URL with its scheme, e\.g\. https://x"):
        check_base_url("the host", url, "https://x")


@pytest.mark.parametrize(
    ("platform", "value", "bad"),
    [
        (
            "canvas",
            "url:GET|/api/v1/accounts/:id,url:GET|/api/v1/accounts",
            "url:GET|/api/v1/accounts/:id,url:GET|/api/v1/accounts",
        ),
        ("canvas", "url:GET|/api/v1/accounts/:id,", "url:GET|/api/v1/accounts/:id,"),
        ("canvas", "url:GET /api/v1/accounts", "url:GET"),
        ("brightspace", "datahub:dataexports:*,datasets:bds:read", "datahub:dataexports:*,datasets:bds:read"),
        ("brightspace", "datahub dataexports read", "datahub"),
    ],
)
def test_malformed_scopes_are_refused_naming_the_form(platform, value, bad):
    with pytest.raises(LmsConfigurationError) as refused:
        parse_scopes(platform, [value])
    assert repr(bad) in str(refused.value)
    assert "separate several with spaces (no commas)" in str(refused.value)
