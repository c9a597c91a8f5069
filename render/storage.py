"""Where finished images go: S3 (any endpoint) through boto3, or a local folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from uuid import UUID

from render.postprocess import Encoded


def object_key(tenant: str, render_id: UUID, extension: str) -> str:
    """``tenant/render_id.ext``: the CDN log importer reads tenant and render back from it."""
    return f"{tenant}/{render_id}.{extension}"


@dataclass(frozen=True)
class Stored:
    uri: str
    bytes: int
    put_requests: int  # requests billed by an object store; 0 for a local folder


class ImageStore(Protocol):
    def put(self, tenant: str, render_id: UUID, image: Encoded) -> Stored: ...


@dataclass
class S3Store:
    client: Any
    bucket: str

    def put(self, tenant: str, render_id: UUID, image: Encoded) -> Stored:
        key = object_key(tenant, render_id, image.extension)
        self.client.put_object(
            Bucket=self.bucket, Key=key, Body=image.data, ContentType=image.content_type
        )
        return Stored(f"s3://{self.bucket}/{key}", len(image.data), 1)


@dataclass
class LocalStore:
    """For ``--out DIR`` without S3. A file write is no S3 request, so it bills no PUT; the
    bytes are still metered in GB-months, the image's cost of being kept."""

    root: Path

    def put(self, tenant: str, render_id: UUID, image: Encoded) -> Stored:
        path = self.root / object_key(tenant, render_id, image.extension)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(image.data)
        return Stored(str(path), len(image.data), 0)
