"""The URL and retry helpers every HTTP caller of the provider shares."""

from __future__ import annotations

import requests

from airflow_provider_canvas.common.net import (
    absolute_url,
    backoff_seconds,
    never_sent,
    redact_url,
    retry_after_seconds,
    same_host,
)


def test_absolute_url_joins_paths_and_keeps_absolute_urls():
    assert absolute_url("https://h", "/api/v1/x") == "https://h/api/v1/x"
    assert absolute_url("https://h/", "api/v1/x") == "https://h/api/v1/x"
    assert absolute_url("https://h", "https://other/x?y=1") == "https://other/x?y=1"


def test_same_host_compares_host_and_port():
    assert same_host("https://h/x", "https://h")
    assert not same_host("https://h:8443/x", "https://h")
    assert not same_host("https://storage.example/x", "https://h")


def test_redact_url_drops_the_query():
    assert redact_url("https://h/x?sig=abc") == "https://h/x"


def test_retry_after_reads_seconds_only():
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds("-1") == 0.0
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("Wed, 21 Oct 2026 07:28:00 GMT") is None


def test_backoff_is_capped_with_jitter():
    assert 0.5 <= backoff_seconds(1, 1.0, 8.0) <= 1.0
    assert 4.0 <= backoff_seconds(10, 1.0, 8.0) <= 8.0


def test_only_a_connect_timeout_or_a_refused_connection_was_never_sent():
    assert never_sent(requests.ConnectTimeout())
    assert not never_sent(requests.ReadTimeout())
    assert not never_sent(requests.ConnectionError("reset by peer"))
