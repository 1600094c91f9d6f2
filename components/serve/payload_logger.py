"""The local predictor's payload logger: what KServe's agent does on a cluster, in-process.

Each answered inference becomes two binary-mode CloudEvents sharing one ``ce-id``, a request
and a response, posted to the capture sink exactly as KServe's logger posts them (kserve/kserve
``pkg/logger/worker.go``). Sending happens on a background thread, so a slow or restarting sink
never delays an answer; events wait in a bounded queue and are re-sent until the sink
acknowledges them. A full queue drops (and counts) new events rather than blocking serving.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path

logger = logging.getLogger(__name__)

REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"


def request_id(headers: dict[str, str] | None) -> str:
    """The caller's request id (``ce-id``/``x-request-id``, as KServe's agent reads), or new."""
    lower = {k.lower(): v for k, v in (headers or {}).items()}
    return lower.get("ce-id") or lower.get("x-request-id") or str(uuid.uuid4())


class PayloadLogger:
    """Posts request/response CloudEvent pairs to ``url`` from a background thread."""

    def __init__(self, url: str, model_name: str, model_version: str = "",
                 max_queue: int = 100_000, max_backoff: float = 5.0) -> None:  # fmt: skip
        self.url = url
        self.model_name = model_name
        self.model_version = model_version
        self.max_backoff = max_backoff
        self.queue: queue.Queue[tuple[str, str, bytes, str]] = queue.Queue(max_queue)
        self.sent = 0
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="payload-logger", daemon=True)
        self._thread.start()

    def log(self, event_id: str, request: dict, response: dict) -> None:
        """Queue one inference (never blocks; drops and counts when the queue is full)."""
        now = datetime.now(UTC).isoformat()
        for kind, body in ((REQUEST_TYPE, request), (RESPONSE_TYPE, response)):
            try:
                self.queue.put_nowait((event_id, kind, json.dumps(body).encode(), now))
            except queue.Full:
                self.dropped += 1
                if self.dropped in (1, 10, 100) or self.dropped % 1000 == 0:
                    logger.warning("payload logger queue full: %d events dropped", self.dropped)

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            backoff = 0.1
            while not self._send(*item):
                time.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff)
            self.sent += 1
            self.queue.task_done()

    def _send(self, event_id: str, kind: str, body: bytes, when: str) -> bool:
        headers = {
            "Content-Type": "application/json", "ce-specversion": "1.0", "ce-id": event_id,
            "ce-type": kind, "ce-source": f"http://localhost/{self.model_name}", "ce-time": when,
            "ce-inferenceservicename": self.model_name, "ce-component": "predictor",
            "ce-endpoint": "default", "ce-modelversion": self.model_version,
        }  # fmt: skip
        request = urllib.request.Request(self.url, body, headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=10) as r:  # noqa: S310 (our sink)
                return 200 <= r.status < 300
        except urllib.error.HTTPError as e:
            if 400 <= e.code < 500:  # the sink will never take it: say so, do not retry
                logger.warning("capture sink refused event %s: %s", event_id, e.read()[:200])
                return True
            return False
        except OSError:
            return False

    def drain(self, timeout: float = 30.0) -> bool:
        """Wait until every queued event was acknowledged (tests, clean shutdown)."""
        deadline = time.monotonic() + timeout
        while self.queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.05)
        return not self.queue.unfinished_tasks


def served_version(model_dir: str) -> str:
    """The registered version named by ``served_from.json`` beside the model files, or ''."""
    path = Path(model_dir) / "served_from.json"
    try:
        return str(json.loads(path.read_text()).get("version") or "")
    except (OSError, ValueError, AttributeError):
        return ""
