"""S3 storage on boto3: URI parsing, file and prefix transfer, listing with checksums.

Retries are botocore's own (``standard`` or ``adaptive`` mode) and large files go through the
transfer manager's multipart upload; nothing here loops on errors by hand.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from components.common.errors import StorageError
from components.common.settings import Settings

logger = logging.getLogger(__name__)

MiB = 1024 * 1024
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


@dataclass(frozen=True)
class S3Uri:
    """A parsed ``s3://bucket/key`` URI; ``key`` may be empty or a prefix ending in '/'."""

    bucket: str
    key: str

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def join(self, *parts: str) -> S3Uri:
        key = self.key
        for part in parts:
            if key and not key.endswith("/"):
                key += "/"
            key += part.lstrip("/")
        return S3Uri(self.bucket, key)

    @property
    def prefix(self) -> str:
        """The key as a directory prefix (ends with '/', or empty for the bucket root)."""
        return self.key if not self.key or self.key.endswith("/") else self.key + "/"


def is_s3_uri(uri: str) -> bool:
    return uri.startswith(("s3://", "s3a://"))


def parse_s3_uri(uri: str) -> S3Uri:
    """Parse ``s3://bucket/key`` (or ``s3a://``), rejecting anything malformed with a reason."""
    scheme, sep, rest = uri.partition("://")
    if not sep or scheme not in ("s3", "s3a"):
        raise StorageError(f"{uri!r} is not an S3 URI: expected s3://bucket/key")
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise StorageError(f"{uri!r} has no bucket name")
    if not _BUCKET_RE.match(bucket) or ".." in bucket:
        raise StorageError(
            f"{uri!r}: bucket {bucket!r} is not a valid S3 bucket name "
            "(3-63 lowercase letters, digits, '.', '-')"
        )
    if "//" in key:
        raise StorageError(f"{uri!r} has an empty path segment ('//')")
    if any(ord(c) < 32 for c in key):
        raise StorageError(f"{uri!r} has a control character in its key")
    return S3Uri(bucket, key)


def make_client(settings: Settings) -> Any:
    """An S3 client with botocore-managed retries and the settings' endpoint override."""
    config = Config(
        region_name=settings.aws_region,
        retries={"mode": settings.s3_retry_mode, "max_attempts": settings.s3_max_attempts},
        # Path-style addressing works on AWS and on S3-compatible servers on localhost.
        s3={"addressing_style": "path"},
    )
    return boto3.session.Session().client(
        "s3", endpoint_url=settings.s3_endpoint_url, config=config
    )


@dataclass(frozen=True)
class ObjectInfo:
    """One listed object: its key, size and ETag (the data version used for lineage)."""

    key: str
    size: int
    etag: str

    def to_dict(self, bucket: str) -> dict[str, Any]:
        return {"uri": f"s3://{bucket}/{self.key}", "size": self.size, "etag": self.etag}


class S3Storage:
    """File and prefix transfers against one S3 endpoint."""

    def __init__(
        self,
        settings: Settings | None = None,
        client: Any = None,
        multipart_threshold: int = 64 * MiB,
        multipart_chunksize: int = 16 * MiB,
    ) -> None:
        self.settings = settings or Settings.from_env()
        self.client = client or make_client(self.settings)
        self.transfer = TransferConfig(
            multipart_threshold=multipart_threshold, multipart_chunksize=multipart_chunksize
        )

    def ensure_bucket(self, bucket: str) -> None:
        """Create ``bucket`` if it does not exist yet."""
        try:
            self.client.head_bucket(Bucket=bucket)
            return
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
                raise StorageError(f"cannot reach bucket {bucket!r}: {e}") from e
        kwargs: dict[str, Any] = {"Bucket": bucket}
        if self.settings.aws_region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.settings.aws_region}
        self._call("create bucket", bucket, self.client.create_bucket, **kwargs)

    def upload_file(self, path: str | Path, uri: str) -> None:
        """Upload one file; above the multipart threshold it goes up in parts."""
        dest = parse_s3_uri(uri)
        self._call(
            "upload",
            uri,
            self.client.upload_file,
            str(path),
            dest.bucket,
            dest.key,
            Config=self.transfer,
        )

    def download_file(self, uri: str, path: str | Path) -> Path:
        src = parse_s3_uri(uri)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._call(
            "download",
            uri,
            self.client.download_file,
            src.bucket,
            src.key,
            str(path),
            Config=self.transfer,
        )
        return path

    def list_objects(self, uri: str) -> list[ObjectInfo]:
        """Every object under a prefix, sorted by key."""
        src = parse_s3_uri(uri)
        paginator = self.client.get_paginator("list_objects_v2")
        out: list[ObjectInfo] = []
        try:
            for page in paginator.paginate(Bucket=src.bucket, Prefix=src.key):
                for obj in page.get("Contents", []):
                    out.append(ObjectInfo(obj["Key"], int(obj["Size"]), obj["ETag"].strip('"')))
        except (ClientError, BotoCoreError) as e:
            raise StorageError(f"cannot list {uri}: {e}") from e
        return sorted(out, key=lambda o: o.key)

    def upload_dir(self, local_dir: str | Path, uri: str) -> list[str]:
        """Upload every file below ``local_dir`` under the prefix ``uri``; returns the URIs."""
        local_dir = Path(local_dir)
        if not local_dir.is_dir():
            raise StorageError(f"{local_dir} is not a directory")
        dest = parse_s3_uri(uri)
        uploaded = []
        for path in sorted(p for p in local_dir.rglob("*") if p.is_file()):
            target = S3Uri(dest.bucket, dest.prefix + path.relative_to(local_dir).as_posix())
            self.upload_file(path, str(target))
            uploaded.append(str(target))
        return uploaded

    def download_prefix(self, uri: str, local_dir: str | Path) -> list[Path]:
        """Download every object under the prefix ``uri`` into ``local_dir``, keeping layout."""
        src = parse_s3_uri(uri)
        local_dir = Path(local_dir)
        paths = []
        for obj in self.list_objects(uri):
            relative = obj.key[len(src.prefix) :] if obj.key.startswith(src.prefix) else obj.key
            if not relative or relative.endswith("/"):
                continue
            paths.append(self.download_file(f"s3://{src.bucket}/{obj.key}", local_dir / relative))
        return paths

    def put_bytes(
        self, uri: str, data: bytes, content_type: str = "application/octet-stream"
    ) -> None:
        dest = parse_s3_uri(uri)
        self._call(
            "put",
            uri,
            self.client.put_object,
            Bucket=dest.bucket,
            Key=dest.key,
            Body=data,
            ContentType=content_type,
        )

    def get_bytes(self, uri: str) -> bytes:
        src = parse_s3_uri(uri)
        response = self._call("get", uri, self.client.get_object, Bucket=src.bucket, Key=src.key)
        return response["Body"].read()

    def put_json(self, uri: str, data: Any) -> None:
        payload = json.dumps(data, indent=2, sort_keys=True).encode()
        self.put_bytes(uri, payload, "application/json")

    def get_json(self, uri: str) -> Any:
        return json.loads(self.get_bytes(uri))

    def exists(self, uri: str) -> bool:
        src = parse_s3_uri(uri)
        try:
            self.client.head_object(Bucket=src.bucket, Key=src.key)
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise StorageError(f"cannot stat {uri}: {e}") from e
        return True

    def copy(self, src_uri: str, dest_uri: str) -> None:
        """Server-side copy of one object (multipart above the threshold)."""
        src, dest = parse_s3_uri(src_uri), parse_s3_uri(dest_uri)
        self._call(
            "copy",
            src_uri,
            self.client.copy,
            {"Bucket": src.bucket, "Key": src.key},
            dest.bucket,
            dest.key,
            Config=self.transfer,
        )

    def delete_prefix(self, uri: str) -> int:
        """Delete every object under a prefix; returns how many were deleted."""
        src = parse_s3_uri(uri)
        keys = [o.key for o in self.list_objects(uri)]
        for start in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[start : start + 1000]]
            self._call(
                "delete",
                uri,
                self.client.delete_objects,
                Bucket=src.bucket,
                Delete={"Objects": batch, "Quiet": True},
            )
        return len(keys)

    @staticmethod
    def _call(action: str, target: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (ClientError, BotoCoreError) as e:
            raise StorageError(f"S3 {action} of {target} failed: {e}") from e
