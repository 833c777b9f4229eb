"""A local S3 API (moto's server mode on 127.0.0.1) that several processes, or "hosts", reach over HTTP."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from airflow_provider_canvas.testing.primitives import free_port

# moto accepts any key; these only have to look like AWS's. Not secrets.
ACCESS_KEY, SECRET_KEY, REGION = "local-s3-access-key", "local-s3-secret-key", "us-east-1"


@dataclass(frozen=True)
class LocalS3:
    """One moto server and a bucket in it."""

    endpoint: str
    bucket: str

    def connection(self) -> dict[str, Any]:
        """An ``aws`` connection (as the REST API takes it) that ObjectStoragePath ``s3://`` uses."""
        return {
            "conn_type": "aws",
            "login": ACCESS_KEY,
            "password": SECRET_KEY,
            "extra": json.dumps({"endpoint_url": self.endpoint, "region_name": REGION}),
        }

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
        )

    def keys(self, prefix: str = "") -> list[str]:
        """Every object key under ``prefix``, sorted."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


@contextmanager
def local_s3(bucket: str | None = None) -> Iterator[LocalS3]:
    """Start moto's S3 server on a free port with ``bucket`` (default: a new name) made; stop it afterwards.

    moto keeps its buckets per process, not per server: a bucket name of its own keeps tests apart.
    """
    from moto.server import ThreadedMotoServer

    bucket = bucket or f"canvas-data-{uuid.uuid4().hex[:10]}"
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        s3 = LocalS3(f"http://127.0.0.1:{port}", bucket)
        s3.client().create_bucket(Bucket=bucket)
        yield s3
    finally:
        server.stop()
