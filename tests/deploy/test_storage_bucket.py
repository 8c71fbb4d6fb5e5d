"""Compose and Kubernetes hand the storage service an empty S3 server (MinIO) or an empty bucket
name: the service must report healthy before the bucket exists, create it on the first upload,
and cope with other replicas doing the same at the same time."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from services.storage.backends import S3Backend
from tests.storage.helpers import read_all, stream

pytestmark = pytest.mark.s3


async def test_missing_bucket_is_created_by_the_first_upload_of_any_replica(s3_endpoint: str) -> None:
    bucket = f"deploy-{uuid.uuid4().hex[:16]}"
    replicas = [S3Backend(s3_endpoint, bucket, "test", "test") for _ in range(3)]
    try:
        assert not replicas[0].client.bucket_exists(bucket)
        # Healthy (so compose's depends_on and Kubernetes' readiness let the stack start) ...
        assert [await r.ready() for r in replicas] == [None, None, None]
        assert not replicas[0].client.bucket_exists(bucket)
        # ... and the first uploads, arriving together on three replicas, create it once.
        await asyncio.gather(*(r.put(f"alice/job/{i}.png", "image/png", stream(b"x" * 1000))
                               for i, r in enumerate(replicas)))
        assert replicas[0].client.bucket_exists(bucket)
        for i in range(len(replicas)):
            info, body = await replicas[(i + 1) % 3].open(f"alice/job/{i}.png")
            assert info.size == 1000 and (await read_all(body))[0] == b"x" * 1000
    finally:
        for r in replicas:
            await r.close()
