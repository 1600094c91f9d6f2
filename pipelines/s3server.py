"""The local stack's S3 API server: moto's server, with its objects kept on disk.

moto keeps buckets in memory, so a restarted server used to come back empty while MLflow's
database (on disk) still pointed at model files in it. This runs the same WSGI application as
``python -m moto.server`` and mirrors every bucket to ``--data-dir``: before a write request's
response leaves, the changed objects are written (each file, then the bucket's index, both by
atomic rename), so a client that got a 200 finds its object after a restart or a ``kill -9``.
On start the directory is loaded back into moto's backend before the port opens.

Layout: ``<data-dir>/<bucket>/index.json`` maps each key to its file under ``objects/`` (named by
the SHA-1 of the key, so keys that are prefixes of others never clash), its ETag and metadata.
Only the latest version of each key is kept; this is a development store, not a versioned one.

``python -m pipelines.s3server --data-dir .local/s3 -p PORT`` (the stack starts it).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)
WRITE_METHODS = {"PUT", "POST", "DELETE"}
INDEX = "index.json"


def _backend() -> Any:
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    return s3_backends[DEFAULT_ACCOUNT_ID]["aws"]


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class DiskMirror:
    """Keeps ``data_dir`` equal to moto's buckets (latest version of each key)."""

    def __init__(self, data_dir: Path, backend: Any | None = None) -> None:
        self.data_dir = data_dir
        self.backend = backend if backend is not None else _backend()
        self.lock = threading.Lock()
        self.indexes: dict[str, dict[str, dict]] = {}

    # ---- start: disk -> moto
    def load(self, region: str) -> int:
        """Recreate every mirrored bucket and object in the backend; returns the object count."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        count = 0
        for bucket_dir in sorted(p for p in self.data_dir.iterdir() if p.is_dir()):
            try:
                index = json.loads((bucket_dir / INDEX).read_text())
            except (OSError, ValueError) as e:
                logger.warning("skipping %s: unreadable index (%s)", bucket_dir, e)
                continue
            self.backend.create_bucket(bucket_dir.name, region)
            kept: dict[str, dict] = {}
            for key, entry in index.items():
                try:
                    value = (bucket_dir / "objects" / entry["file"]).read_bytes()
                except OSError as e:
                    logger.warning("s3://%s/%s: object file missing (%s)", bucket_dir.name, key, e)
                    continue
                obj = self.backend.put_object(bucket_dir.name, key, value)
                if entry.get("metadata"):
                    obj.set_metadata(entry["metadata"], replace=True)
                kept[key] = {**entry, "etag": obj.etag}
                count += 1
            self.indexes[bucket_dir.name] = kept
            self._write_index(bucket_dir.name)
        return count

    # ---- after each write request: moto -> disk
    def sync(self, bucket: str | None = None) -> None:
        """Mirror ``bucket`` (every bucket when None or unknown) as moto holds it now."""
        with self.lock:
            live = dict(self.backend.buckets)
            names = (
                [bucket]
                if bucket in live or bucket in self.indexes
                else list(set(live) | set(self.indexes))
            )
            for name in names:
                if name in live:
                    self._sync_bucket(name, live[name].keys.items())
                else:
                    self._drop_bucket(name)

    def _sync_bucket(self, name: str, keys: Iterable[tuple[str, Any]]) -> None:
        changed = name not in self.indexes
        index = self.indexes.setdefault(name, {})
        objects = self.data_dir / name / "objects"
        objects.mkdir(parents=True, exist_ok=True)
        seen: set[str] = set()
        for key, obj in keys:
            seen.add(key)
            if index.get(key, {}).get("etag") == obj.etag:
                continue
            file = hashlib.sha1(key.encode()).hexdigest()
            _atomic_write(objects / file, obj.value)
            index[key] = {"file": file, "etag": obj.etag, "metadata": dict(obj.metadata)}
            changed = True
        for key in set(index) - seen:
            (objects / index.pop(key)["file"]).unlink(missing_ok=True)
            changed = True
        if changed:
            self._write_index(name)

    def _write_index(self, name: str) -> None:
        (self.data_dir / name).mkdir(parents=True, exist_ok=True)
        data = json.dumps(self.indexes[name], sort_keys=True).encode()
        _atomic_write(self.data_dir / name / INDEX, data)

    def _drop_bucket(self, name: str) -> None:
        import shutil

        self.indexes.pop(name, None)
        shutil.rmtree(self.data_dir / name, ignore_errors=True)


def persistent_app(app: Callable, mirror: DiskMirror) -> Callable:
    """Wrap a WSGI app so that every write request is mirrored before its response is sent."""

    def wrapped(environ: dict, start_response: Callable) -> Any:
        body = app(environ, start_response)
        path = environ.get("PATH_INFO", "")
        if environ.get("REQUEST_METHOD") in WRITE_METHODS and not path.startswith("/moto-api"):
            # path-style requests (what our clients send to 127.0.0.1) name their bucket first;
            # anything else (virtual-hosted style) syncs every bucket
            mirror.sync(path.lstrip("/").split("/", 1)[0] or None)
        return body

    return wrapped


def main(argv: list[str] | None = None) -> int:
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import run_simple

    p = argparse.ArgumentParser(prog="python -m pipelines.s3server", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--data-dir", required=True, type=Path, help="where the buckets are kept")
    p.add_argument("-H", "--host", default="127.0.0.1")
    p.add_argument("-p", "--port", type=int, required=True)
    p.add_argument("--region", default=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    os.environ.setdefault("MOTO_PORT", str(args.port))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    mirror = DiskMirror(args.data_dir)
    loaded = mirror.load(args.region)
    logger.info("loaded %d objects from %s", loaded, args.data_dir)
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(args.host, args.port, persistent_app(app, mirror), threaded=True,
               request_handler=MotoRequestHandler)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
