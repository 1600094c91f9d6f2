"""Finding, staging and checking the raw input files before Spark reads them.

Each file's header is checked here (wrong header, not a TSV or not gzip at all) and reported in
one line that names the file. A gzip that is cut short is found by Spark's own read, which
names the file too (``failures.read_failure``): decompressing every input here first took about
as long as the JVM's start (5 s at 5M rows) and competed with it for the cores.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import logging
import shutil
import zlib
from dataclasses import dataclass
from pathlib import Path

from components.common.errors import InvalidInput, StorageError
from components.common.schema import RAW_COLUMNS, RAW_SEPARATOR
from components.common.storage import S3Storage, is_s3_uri, parse_s3_uri

logger = logging.getLogger(__name__)

RAW_SUFFIXES = (".tsv", ".tsv.gz")
HEADER = RAW_SEPARATOR.join(RAW_COLUMNS)


@dataclass(frozen=True)
class InputFile:
    """One raw file: where it is, its size and a version (S3 ETag or local sha256)."""

    uri: str
    size: int
    version: str

    def to_dict(self) -> dict:
        return {"uri": self.uri, "size": self.size, "etag": self.version}


def is_raw_file(name: str) -> bool:
    return name.endswith(RAW_SUFFIXES)


def list_inputs(input_uri: str, storage: S3Storage | None) -> list[InputFile]:
    """Every raw TSV or TSV.gz under an S3 prefix, a local directory, or one local file."""
    if is_s3_uri(input_uri):
        if storage is None:
            raise ValueError("an s3:// input needs an S3Storage")
        bucket = parse_s3_uri(input_uri).bucket
        found = [
            InputFile(f"s3://{bucket}/{o.key}", o.size, o.etag)
            for o in storage.list_objects(input_uri)
            if is_raw_file(o.key)
        ]
    else:
        path = Path(input_uri)
        if not path.exists():
            raise InvalidInput(f"input {input_uri} does not exist")
        paths = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        found = [
            InputFile(str(p.resolve()), p.stat().st_size, _sha256(p))
            for p in paths
            if is_raw_file(p.name)
        ]
    if not found:
        raise InvalidInput(f"no raw review files (*.tsv, *.tsv.gz) under {input_uri}")
    return found


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


STAGING_HINT = "set TMPDIR to a directory on a larger disk (ingest stages S3 inputs under it)"


def stage_inputs(files: list[InputFile], storage: S3Storage, local_dir: Path) -> list[Path]:
    """Download S3 inputs to ``local_dir`` (the path for Spark runtimes without S3A).

    A disk too small for the inputs is a StorageError naming the directory, what the inputs
    need and what is free, before anything is downloaded (or when the disk fills meanwhile).
    """
    local_dir.mkdir(parents=True, exist_ok=True)
    need = sum(f.size for f in files)
    free = shutil.disk_usage(local_dir).free
    if need > free:
        raise StorageError(_no_space(local_dir, need, free))
    paths = []
    for index, f in enumerate(files):
        name = f"{index:05d}-{f.uri.rsplit('/', 1)[-1]}"
        try:
            paths.append(storage.download_file(f.uri, local_dir / name))
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
            raise StorageError(_no_space(local_dir, need, shutil.disk_usage(local_dir).free)) from e
    return paths


def _no_space(directory: Path, need: int, free: int) -> str:
    mb = 1024 * 1024
    return (f"no space left in {directory} to stage the S3 inputs: they need {need / mb:,.1f} MB, "
            f"{free / mb:,.1f} MB free; {STAGING_HINT}")  # fmt: skip


def check_raw_file(path: Path, display: str) -> str:
    """Validate one local raw file; return 'empty', 'header_only' or 'ok'.

    Raises InvalidInput naming ``display`` for a gzip that does not start as one (or ends
    within its first lines), an undecodable header, or a header that is not the 15 raw columns
    in order. Only the first two lines are read.
    """
    if path.stat().st_size == 0:
        return "empty"
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            first = f.readline()
            second = f.readline()
    except (OSError, EOFError, zlib.error) as e:
        raise InvalidInput(f"{display}: unreadable gzip ({e})") from e
    return _check_header(first, display, has_rows=bool(second.strip()))


def _check_header(first: bytes, display: str, has_rows: bool) -> str:
    if not first.strip():
        return "empty"
    try:
        header = first.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError as e:
        raise InvalidInput(f"{display}: header is not UTF-8 text") from e
    if header != HEADER:
        got = header.split(RAW_SEPARATOR)
        missing = [c for c in RAW_COLUMNS if c not in got]
        detail = f"missing {missing}" if missing else f"columns out of order: {got}"
        raise InvalidInput(f"{display}: wrong header ({detail}); expected the 15 raw columns")
    return "ok" if has_rows else "header_only"


def check_s3_header(storage: S3Storage, f: InputFile) -> str:
    """Check an S3 object's header from its first bytes (the s3a path reads the rest)."""
    if f.size == 0:
        return "empty"
    src = parse_s3_uri(f.uri)
    response = storage.client.get_object(Bucket=src.bucket, Key=src.key, Range="bytes=0-262143")
    head = response["Body"].read()
    if f.uri.endswith(".gz"):
        try:
            head = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(head, 1 << 20)
        except zlib.error as e:
            raise InvalidInput(f"{f.uri}: unreadable gzip ({e})") from e
    lines = head.split(b"\n", 2)
    return _check_header(lines[0], f.uri, has_rows=len(lines) > 1 and bool(lines[1].strip()))
