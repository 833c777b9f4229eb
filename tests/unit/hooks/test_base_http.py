"""The shared HTTP layer on small pieces: retries, throttling and errors (real ones: integration)."""

from __future__ import annotations

import requests

from airflow_provider_canvas.brightspace.hooks.brightspace import BrightspaceHook
from airflow_provider_canvas.canvas.hooks.canvas import CanvasHook
from airflow_provider_canvas.common.net import error_message, redact_url


def _response(status: int, body: str = "", headers: dict[str, str] | None = None) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response._content = body.encode()
    response.headers.update(headers or {})
    return response


def test_redact_url_drops_the_query():
    assert redact_url("https://h/x/y?sig=abc&page=bookmark:1") == "https://h/x/y"


def test_canvas_throttling_is_403_rate_limit_or_429():
    hook = CanvasHook("c")
    assert hook.retry.throttled(_response(403, "403 Forbidden (Rate Limit Exceeded)"))
    assert hook.retry.throttled(_response(429))
    assert not hook.retry.throttled(_response(403, '{"errors":[{"message":"forbidden"}]}'))


def test_canvas_pacing_slows_down_when_the_bucket_runs_low():
    hook = CanvasHook("c")
    assert hook.api_rules.pacing_delay(_response(200, headers={"X-Rate-Limit-Remaining": "600"})) == 0
    assert hook.api_rules.pacing_delay(_response(200, headers={"X-Rate-Limit-Remaining": "50"})) == 10.0
    assert 0 < hook.api_rules.pacing_delay(_response(200, headers={"X-Rate-Limit-Remaining": "140"})) < 2


def test_error_message_reads_both_platforms_shapes():
    assert error_message(_response(401, '{"errors":[{"message":"Invalid access token."}]}')) == (
        "Invalid access token."
    )
    assert error_message(_response(404, '{"Errors":[{"Message":"Not Found"}]}')) == "Not Found"
    assert error_message(_response(400, '{"error":"invalid_grant"}')) == "invalid_grant"
    assert error_message(_response(500, "Internal")) == "Internal"


def test_backoff_grows_with_jitter_and_is_capped():
    hook = CanvasHook("c", backoff_seconds=1, max_backoff_seconds=8)
    assert 0.5 <= hook.retry.backoff(1) <= 1
    assert 4 <= hook.retry.backoff(4) <= 8
    assert 4 <= hook.retry.backoff(10) <= 8


def test_brightspace_throttling_is_429_or_403_rate_limit_and_never_a_plain_refusal():
    hook = BrightspaceHook("b")
    assert hook.retry.throttled(_response(403, "Rate Limit Exceeded"))
    assert hook.retry.throttled(_response(403, "", {"X-Rate-Limit-Remaining": "0"}))
    assert hook.retry.throttled(_response(429))
    assert not hook.retry.throttled(
        _response(403, '{"error":"insufficient_scope"}', {"X-Rate-Limit-Remaining": "9"})
    )


def test_throttled_waits_follow_retry_after_then_the_reset_header_and_are_capped():
    hook = BrightspaceHook("b", max_backoff_seconds=30)
    assert hook.retry.asked_wait(_response(429, headers={"Retry-After": "3", "X-Rate-Limit-Reset": "9"})) == 3
    assert hook.retry.asked_wait(_response(403, headers={"X-Rate-Limit-Reset": "9"})) == 9
    assert hook.retry.asked_wait(_response(403, headers={"X-Rate-Limit-Reset": "86400"})) == 30
    assert hook.retry.asked_wait(_response(403)) is None  # the caller backs off
