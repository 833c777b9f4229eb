"""A local Canvas LMS and D2L Brightspace emulator for tests, demos and DAG tests (stdlib only)."""

from airflow_provider_canvas.testing.ads import AdsDataSet, AdsJob
from airflow_provider_canvas.testing.brightspace import BdsDataSet, BdsExtract, BrightspaceEmulator
from airflow_provider_canvas.testing.canvas import Account, CanvasEmulator, SsoWrite
from airflow_provider_canvas.testing.emulator import LmsEmulator
from airflow_provider_canvas.testing.primitives import ApiRequest, IssuedTokens, TokenRequest
from airflow_provider_canvas.testing.signed_storage import SignedDownload

__all__ = [
    "Account",
    "AdsDataSet",
    "AdsJob",
    "ApiRequest",
    "BdsDataSet",
    "BdsExtract",
    "BrightspaceEmulator",
    "CanvasEmulator",
    "IssuedTokens",
    "LmsEmulator",
    "SignedDownload",
    "SsoWrite",
    "TokenRequest",
]
