r"""The capture sink: KServe payload-logger CloudEvents in, Parquet batches on S3 out.

Usage::

    python -m components.monitor.sink --output s3://bucket/monitoring/captured/ \
        --spool-dir /var/spool/capture [--port 8080] [--flush-seconds 60] [--no-keep-text]

An event is acknowledged (HTTP 200) only after it is appended to a spool segment on local disk
and fsynced, so a killed sink loses no acknowledged event. A flush seals the open segment,
pairs requests with responses (``capture.pair_events``) and writes one Parquet object per
(model version, hour) for the whole batch, never one per request. A flush is a small
transaction: a manifest naming its segments, its time and its batch id is written first; the
objects' keys derive from it, so a flush interrupted at any point is redone on restart with
the same inputs and overwrites the same keys. Events of written inferences are remembered
(``done.log``) for a day, so a client that re-sends an event after a lost acknowledgement
creates no duplicate record.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from components.common.errors import ConfigurationError, InvalidInput, PlatformError
from components.common.logs import configure_logging
from components.common.storage import S3Storage, is_s3_uri
from components.monitor import capture

logger = logging.getLogger(__name__)

MANIFEST, COMMITTED, DONE_LOG = "flush.json", "flush.committed.json", "done.log"


@dataclass(frozen=True)
class SinkConfig:
    """Where the sink listens, spools and writes, and how it batches."""

    output: str
    spool_dir: str
    host: str = "0.0.0.0"  # noqa: S104 (a Service in front of it on a cluster)
    port: int = 8080
    flush_seconds: float = 60.0
    flush_events: int = 20_000
    pair_timeout: float = 300.0
    keep_text: bool = True
    dedupe_seconds: float = 86_400.0
    max_body_bytes: int = 4 * 1024 * 1024
    instance: str = field(default_factory=socket.gethostname)

    def __post_init__(self) -> None:
        if not self.output:
            raise ConfigurationError("--output is required (s3:// prefix or local directory)")
        if self.flush_seconds <= 0 or self.flush_events < 1 or self.pair_timeout <= 0:
            raise ConfigurationError("flush_seconds, flush_events and pair_timeout must be > 0")


def _fsync_write(path: Path, data: str | bytes) -> None:
    """Write ``path`` atomically and durably: temp file, fsync, rename, fsync the directory."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """Append-only, fsynced segment files plus the flush transaction around them."""

    def __init__(self, cfg: SinkConfig, storage: S3Storage | None = None) -> None:
        self.cfg = cfg
        self.dir = Path(cfg.spool_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.storage = storage
        self.lock = threading.Lock()  # appends and rotation
        self.flush_lock = threading.Lock()
        self.counts = {"accepted": 0, "records_written": 0, "objects_written": 0, "flushes": 0}
        self.dropped: dict[str, int] = {}
        self.epoch = self._epoch()
        self.done = self._load_done()
        self._recover()
        self.current_id = self._next_id()
        self.current = open(self._segment(self.current_id), "a")  # noqa: SIM115 (kept open)
        self.current_events = 0

    # ---- files ---------------------------------------------------------------------------
    def _epoch(self) -> str:
        """A random name of this spool, so a wiped spool never reuses an earlier batch's keys."""
        path = self.dir / "spool.id"
        if not path.exists():
            _fsync_write(path, uuid.uuid4().hex[:8])
        return path.read_text().strip()

    def _segment(self, n: int) -> Path:
        return self.dir / f"seg-{n:012d}.jsonl"

    def _segment_ids(self) -> list[int]:
        return sorted(int(p.stem[4:]) for p in self.dir.glob("seg-*.jsonl"))

    def _next_id(self) -> int:
        ids = self._segment_ids()
        return (ids[-1] + 1) if ids else 1

    def _read_segment(self, n: int) -> list[capture.Event]:
        events = []
        path = self._segment(n)
        if not path.exists():
            return events
        for number, line in enumerate(path.read_text().splitlines(), 1):
            try:
                events.append(capture.Event.from_json(line))
            except (ValueError, TypeError):
                # only a line torn by a kill can be unreadable, and it was never acknowledged
                logger.warning("%s:%d: torn line skipped (never acknowledged)", path.name, number)
        return events

    def _load_done(self) -> dict[str, tuple[float, str]]:
        done: dict[str, tuple[float, str]] = {}
        path = self.dir / DONE_LOG
        if not path.exists():
            return done
        horizon = time.time() - self.cfg.dedupe_seconds
        for line in path.read_text().splitlines():
            parts = line.split(" ", 2)
            if len(parts) == 3 and float(parts[0]) >= horizon:
                done[parts[2]] = (float(parts[0]), parts[1])
        # rewrite without the expired ids so the file does not grow for ever
        _fsync_write(path, "".join(f"{t} {b} {i}\n" for i, (t, b) in done.items()))
        return done

    # ---- receiving -----------------------------------------------------------------------
    def append(self, event: capture.Event) -> None:
        """Durably append one event; returns only once it is on disk."""
        line = event.to_json() + "\n"
        with self.lock:
            self.current.write(line)
            self.current.flush()
            os.fsync(self.current.fileno())
            self.current_events += 1
            self.counts["accepted"] += 1

    # ---- flushing ------------------------------------------------------------------------
    def flush(self) -> dict:
        """Seal the open segment and write everything complete; returns what was written."""
        with self.flush_lock:
            if (self.dir / MANIFEST).exists():  # an earlier batch failed (S3 down): it first
                self._execute(json.loads((self.dir / MANIFEST).read_text()))
            with self.lock:
                sealed = [n for n in self._segment_ids() if n <= self.current_id]
                if not any(self._segment(n).stat().st_size for n in sealed):
                    return {"records": 0, "objects": 0}
                self.current.close()
                batch_id = self.current_id + 1  # the carry segment: sealed input of the next
                self.current_id = batch_id + 1
                self.current = open(self._segment(self.current_id), "a")  # noqa: SIM115
                self.current_events = 0
            manifest = {"batch": batch_id, "segments": sealed, "now": time.time()}
            _fsync_write(self.dir / MANIFEST, json.dumps(manifest))
            return self._execute(manifest)

    def _execute(self, manifest: dict) -> dict:
        batch = f"{self.cfg.instance}-{self.epoch}-{manifest['batch']:09d}"
        events = [e for n in manifest["segments"] for e in self._read_segment(n)]
        done = {i for i, (_, b) in self.done.items() if b != batch}
        pairing = capture.pair_events(events, done, manifest["now"], self.cfg.pair_timeout,
                                      self.cfg.keep_text)  # fmt: skip
        carry = "".join(e.to_json() + "\n" for e in pairing.carry)
        _fsync_write(self._segment(manifest["batch"]), carry)
        objects = self._write_objects(pairing.records, batch)
        stamp = manifest["now"]
        with open(self.dir / DONE_LOG, "a") as f:
            f.write("".join(f"{stamp} {batch} {i}\n" for i in pairing.paired_ids))
            f.flush()
            os.fsync(f.fileno())
        horizon = stamp - self.cfg.dedupe_seconds
        self.done = {i: v for i, v in self.done.items() if v[0] >= horizon}
        for i in pairing.paired_ids:
            self.done[i] = (stamp, batch)
        (self.dir / MANIFEST).replace(self.dir / COMMITTED)
        _fsync_dir(self.dir)
        self._finish(manifest)
        for reason, n in pairing.dropped.items():
            self.dropped[reason] = self.dropped.get(reason, 0) + n
        self.counts["records_written"] += len(pairing.records)
        self.counts["objects_written"] += len(objects)
        self.counts["flushes"] += 1
        if pairing.records or pairing.dropped:
            logger.info("batch %s: %d records in %d objects, %d events waiting, dropped %s",
                        batch, len(pairing.records), len(objects), len(pairing.carry),
                        pairing.dropped or "none")  # fmt: skip
        return {"records": len(pairing.records), "objects": len(objects), "keys": objects,
                "waiting": len(pairing.carry), "dropped": pairing.dropped}  # fmt: skip

    def _write_objects(self, records: list[dict], batch: str) -> list[str]:
        groups: dict[tuple[str, str], list[dict]] = {}
        for record in records:
            groups.setdefault(capture.partition_key(record), []).append(record)
        keys = []
        for (version, hour), rows in sorted(groups.items()):
            key = capture.batch_object_key(self.cfg.output, version, hour, batch)
            data = capture.to_parquet_bytes(rows)
            if is_s3_uri(key):
                self.storage.put_bytes(key, data, "application/vnd.apache.parquet")
            else:
                Path(key).parent.mkdir(parents=True, exist_ok=True)
                _fsync_write(Path(key), data)
            keys.append(key)
        return keys

    def _finish(self, manifest: dict) -> None:
        for n in manifest["segments"]:
            if n != manifest["batch"]:
                self._segment(n).unlink(missing_ok=True)
        (self.dir / COMMITTED).unlink(missing_ok=True)

    def _recover(self) -> None:
        """Finish a committed flush; redo an interrupted one exactly (same inputs, same keys)."""
        if (self.dir / COMMITTED).exists():
            self._finish(json.loads((self.dir / COMMITTED).read_text()))
        if (self.dir / MANIFEST).exists():
            manifest = json.loads((self.dir / MANIFEST).read_text())
            logger.info("redoing interrupted batch %s", manifest["batch"])
            self._execute(manifest)

    def stats(self) -> dict:
        with self.lock:
            open_events = self.current_events
        return {**self.counts, "open_segment_events": open_events, "dropped": self.dropped,
                "output": self.cfg.output, "keep_text": self.cfg.keep_text}  # fmt: skip


def make_handler(spool: Spool) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            logger.debug(format, *args)

        def _reply(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            if self.path in ("/healthz", "/readyz", "/stats"):
                self._reply(200, spool.stats())
            else:
                self._reply(404, {"error": f"no route {self.path}; POST events to /"})

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length") or 0)
            if length > spool.cfg.max_body_bytes:
                self.rfile.read(length)
                self._reply(413, {"error": f"event body of {length} bytes; limit is "
                                           f"{spool.cfg.max_body_bytes}"})  # fmt: skip
                return
            body = self.rfile.read(length)
            if self.path == "/flush":
                try:
                    self._reply(200, spool.flush())
                except PlatformError as e:
                    self._reply(503, {"error": f"flush failed, events kept in the spool: {e}"})
                return
            try:
                event = capture.event_from_http(dict(self.headers.items()), body, time.time())
            except InvalidInput as e:
                self._reply(400, {"error": str(e)})
                return
            spool.append(event)
            if spool.current_events >= spool.cfg.flush_events:
                threading.Thread(target=_flush_quietly, args=(spool,), daemon=True).start()
            self._reply(200, {"accepted": event.id})

    return Handler


def _flush_quietly(spool: Spool) -> None:
    try:
        spool.flush()
    except PlatformError as e:
        logger.warning("flush failed, events kept in the spool for the next try: %s", e)


def serve(cfg: SinkConfig) -> int:
    storage = S3Storage() if is_s3_uri(cfg.output) else None
    spool = Spool(cfg, storage)
    server = ThreadingHTTPServer((cfg.host, cfg.port), make_handler(spool))
    server.daemon_threads = True
    stop = threading.Event()

    def flusher() -> None:
        while not stop.wait(cfg.flush_seconds):
            _flush_quietly(spool)

    threading.Thread(target=flusher, daemon=True).start()

    def shutdown(*_: object) -> None:
        stop.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    logger.info("capture sink on %s:%d, spool %s, output %s (batches every %.0fs or %d events)",
                cfg.host, cfg.port, cfg.spool_dir, cfg.output, cfg.flush_seconds,
                cfg.flush_events)  # fmt: skip
    server.serve_forever()
    server.server_close()
    _flush_quietly(spool)  # a clean stop leaves nothing complete behind
    logger.info("capture sink stopped: %s", spool.stats())
    return 0


def parse_args(argv: list[str] | None) -> SinkConfig:
    p = argparse.ArgumentParser(prog="python -m components.monitor.sink", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--output", required=True, help="s3:// prefix (or directory) for Parquet")
    p.add_argument("--spool-dir", required=True, help="local directory for the durable spool")
    p.add_argument("--host", default="0.0.0.0", help="address to listen on")  # noqa: S104
    p.add_argument("--port", type=int, default=8080, help="port to listen on")
    p.add_argument("--flush-seconds", type=float, default=60.0, help="seconds between batches")
    p.add_argument("--flush-events", type=int, default=20_000,
                   help="events that start a batch before the interval ends")  # fmt: skip
    p.add_argument("--pair-timeout", type=float, default=300.0,
                   help="seconds an unpaired event waits for its partner")  # fmt: skip
    p.add_argument("--keep-text", action=argparse.BooleanOptionalAction, default=True,
                   help="store texts (--no-keep-text: only their properties)")  # fmt: skip
    p.add_argument("--instance", default=socket.gethostname(),
                   help="this sink's name in object keys (replicas never collide)")  # fmt: skip
    a = p.parse_args(argv)
    return SinkConfig(output=a.output, spool_dir=a.spool_dir, host=a.host, port=a.port,
                      flush_seconds=a.flush_seconds, flush_events=a.flush_events,
                      pair_timeout=a.pair_timeout, keep_text=a.keep_text,
                      instance=a.instance)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    configure_logging()
    try:
        cfg = parse_args(argv)
        return serve(cfg)
    except PlatformError as e:
        print(f"capture sink failed: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # a port in use, an unwritable spool directory
        print(f"capture sink failed: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
