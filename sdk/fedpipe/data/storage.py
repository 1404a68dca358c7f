"""Reading and writing by URI: local paths (`file://` or plain), S3 (`s3://bucket/key`) and
Google Cloud Storage (`gs://bucket/key`).

A pipeline pod on a cluster has no data baked in: it reads its dataset from object storage
and keeps a verified local copy. Credentials come only from the environment the pod runs
in (Kubernetes secrets mounted as env vars or files, see fedpipe.ops.kubernetes): for S3
boto3's own chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, ...) and an endpoint from
AWS_ENDPOINT_URL or MLFLOW_S3_ENDPOINT_URL for S3-compatible stores; for GCS
GOOGLE_APPLICATION_CREDENTIALS. Nothing here takes or prints a credential.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote, urlparse

REMOTE_SCHEMES = ("s3", "gs")
CACHE_ENV = "FEDPIPE_CACHE_DIR"
_MANIFEST = ".fedpipe-download.json"


class StorageError(OSError):
    """A URI that cannot be read or written (bad scheme, missing object, failed check)."""


@dataclasses.dataclass(frozen=True)
class Location:
    """A parsed URI: a scheme, a bucket (empty for local paths) and a key or path."""

    scheme: str
    bucket: str
    key: str

    @property
    def remote(self) -> bool:
        return self.scheme in REMOTE_SCHEMES

    def child(self, name: str) -> Location:
        if not self.remote:
            return Location("file", "", str(Path(self.key) / name))
        prefix = self.key.rstrip("/")
        return Location(self.scheme, self.bucket, f"{prefix}/{name}" if prefix else name)

    def uri(self) -> str:
        return f"{self.scheme}://{self.bucket}/{self.key}" if self.remote else self.key


def parse(uri: str) -> Location:
    """Split a URI; a string without a scheme is a local path."""
    parsed = urlparse(uri)
    if parsed.scheme in REMOTE_SCHEMES:
        if not parsed.netloc:
            raise StorageError(f"{uri}: no bucket")
        return Location(parsed.scheme, parsed.netloc, parsed.path.lstrip("/"))
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise StorageError(f"{uri}: file URIs name no host")
        return Location("file", "", unquote(parsed.path))
    if parsed.scheme and len(parsed.scheme) > 1:  # "C:" of a Windows path is not a scheme
        raise StorageError(f"{uri}: unsupported scheme {parsed.scheme!r} (file, s3 or gs)")
    return Location("file", "", uri)


def is_remote(uri: str) -> bool:
    return parse(uri).remote


def _s3_client() -> Any:
    import boto3

    endpoint = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("MLFLOW_S3_ENDPOINT_URL")
    return boto3.client("s3", endpoint_url=endpoint or None)


def _gcs_bucket(name: str) -> Any:
    from google.cloud import storage

    return storage.Client().bucket(name)


def read_bytes(uri: str) -> bytes:
    loc = parse(uri)
    try:
        if loc.scheme == "s3":
            return _s3_client().get_object(Bucket=loc.bucket, Key=loc.key)["Body"].read()
        if loc.scheme == "gs":
            return _gcs_bucket(loc.bucket).blob(loc.key).download_as_bytes()
        return Path(loc.key).read_bytes()
    except (OSError, StorageError):
        raise
    except Exception as e:  # the clients' own errors (botocore, google.api_core)
        raise StorageError(f"cannot read {loc.uri()}: {type(e).__name__}: {e}") from e


def write_bytes(uri: str, data: bytes) -> None:
    loc = parse(uri)
    try:
        if loc.scheme == "s3":
            _s3_client().put_object(Bucket=loc.bucket, Key=loc.key, Body=data)
        elif loc.scheme == "gs":
            _gcs_bucket(loc.bucket).blob(loc.key).upload_from_string(data)
        else:
            path = Path(loc.key)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    except (OSError, StorageError):
        raise
    except Exception as e:
        raise StorageError(f"cannot write {loc.uri()}: {type(e).__name__}: {e}") from e


@contextlib.contextmanager
def open_uri(uri: str, mode: str = "rb") -> Iterator[IO[bytes]]:
    """A binary file object for a URI: "rb" reads the whole object, "wb" uploads on close."""
    if mode not in ("rb", "wb"):
        raise ValueError(f"mode {mode!r}: rb or wb")
    loc = parse(uri)
    if not loc.remote:
        if mode == "wb":
            Path(loc.key).parent.mkdir(parents=True, exist_ok=True)
        with open(loc.key, mode) as f:
            yield f
        return
    if mode == "rb":
        with io.BytesIO(read_bytes(uri)) as f:
            yield f
        return
    buffer = io.BytesIO()
    yield buffer
    write_bytes(uri, buffer.getvalue())


def list_objects(uri: str) -> dict[str, int]:
    """The objects directly under a folder URI, by name, with their sizes in bytes."""
    loc = parse(uri)
    prefix = loc.key.rstrip("/") + "/" if loc.key.strip("/") else ""
    try:
        if loc.scheme == "s3":
            pages = _s3_client().get_paginator("list_objects_v2")
            found = {}
            for page in pages.paginate(Bucket=loc.bucket, Prefix=prefix, Delimiter="/"):
                for item in page.get("Contents", []):
                    found[item["Key"][len(prefix) :]] = int(item["Size"])
            return {k: v for k, v in found.items() if k}
        if loc.scheme == "gs":
            from google.cloud import storage

            blobs = storage.Client().list_blobs(loc.bucket, prefix=prefix, delimiter="/")
            return {b.name[len(prefix) :]: int(b.size) for b in blobs if b.name != prefix}
    except Exception as e:
        raise StorageError(f"cannot list {loc.uri()}: {type(e).__name__}: {e}") from e
    root = Path(loc.key)
    if not root.is_dir():
        raise StorageError(f"{uri}: not a directory")
    return {p.name: p.stat().st_size for p in root.iterdir() if p.is_file()}


def cache_root() -> Path:
    """Where remote folders are copied: $FEDPIPE_CACHE_DIR, else the user cache folder."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fedpipe" / "data"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _verified(folder: Path, listing: dict[str, int]) -> bool:
    """A cached copy is reused only if it has the remote listing's files at the remote
    sizes and its bytes still hash to what was recorded when it was downloaded."""
    manifest = folder / _MANIFEST
    if not manifest.exists():
        return False
    recorded = json.loads(manifest.read_text())
    if recorded.get("sizes") != listing:
        return False
    return all(
        (folder / name).is_file() and _sha256(folder / name) == digest
        for name, digest in recorded.get("sha256", {}).items()
    )


def local_folder(uri: str, cache: Path | None = None) -> Path:
    """A local folder with the files directly under `uri`: the folder itself for a local
    path; for s3:// and gs:// a copy in the cache, keyed by the URI, downloaded when
    missing or when it no longer matches the remote listing, and checked after download
    (every file at its listed size)."""
    loc = parse(uri)
    if not loc.remote:
        return Path(loc.key)
    listing = list_objects(uri)
    if not listing:
        raise StorageError(f"{loc.uri()}: no objects under this prefix")
    key = hashlib.sha256(loc.uri().rstrip("/").encode()).hexdigest()[:24]
    folder = (cache or cache_root()) / key
    if _verified(folder, listing):
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    (folder / _MANIFEST).unlink(missing_ok=True)
    for stale in folder.iterdir():  # files the remote folder no longer has
        if stale.is_file() and stale.name not in listing:
            stale.unlink()
    digests = {}
    for name, size in sorted(listing.items()):
        data = read_bytes(loc.child(name).uri())
        if len(data) != size:
            raise StorageError(f"{loc.child(name).uri()}: read {len(data)} bytes, listed {size}")
        partial = folder / f".{name}.partial"
        partial.write_bytes(data)
        partial.replace(folder / name)
        digests[name] = hashlib.sha256(data).hexdigest()
    manifest = {"uri": loc.uri(), "sizes": listing, "sha256": digests}
    (folder / _MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return folder


def upload_folder(folder: Path, uri: str) -> list[str]:
    """Copy the files directly in a local folder to a folder URI; returns the URIs written."""
    target = parse(uri)
    written = []
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        dest = target.child(path.name).uri()
        write_bytes(dest, path.read_bytes())
        written.append(dest)
    return written
