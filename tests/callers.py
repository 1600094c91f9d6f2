"""Keep-alive callers of a predictor, for the shutdown tests (test-only)."""

from __future__ import annotations

import http.client
import json
import threading
import time


class KeepAliveCaller(threading.Thread):
    """One caller on a keep-alive connection: requests back to back until ``stop`` is set.

    On the server's ``Connection: close`` it ends (``reconnect=False``: one connection's life)
    or opens a new connection, as an HTTP client pool does; an error (reset, refused, a
    connection closed with the request unanswered) is a lost request, recorded with when it was
    sent.
    """

    def __init__(self, host: str, port: int, model: str, text: str, stop: threading.Event,
                 reconnect: bool = False) -> None:  # fmt: skip
        super().__init__(daemon=True)
        self.host, self.port, self.stop, self.reconnect = host, port, stop, reconnect
        self.path = f"/v1/models/{model}:predict"
        self.body = json.dumps({"instances": [text]})
        self.sent: list[float] = []  # when each request was written
        self.answered: list[tuple[float, int]] = []  # (when it was written, status)
        self.errors: list[tuple[float, str]] = []
        self.closed_by_server = False

    def run(self) -> None:
        conn = None
        while not self.stop.is_set():
            conn = conn or http.client.HTTPConnection(self.host, self.port, timeout=60)
            sent = time.monotonic()
            self.sent.append(sent)
            try:
                conn.request("POST", self.path, self.body, {"Content-Type": "application/json"})
                response = conn.getresponse()
                response.read()
            except (OSError, http.client.HTTPException) as e:
                self.errors.append((sent, f"{type(e).__name__}: {e}"))
                conn.close()
                if not self.reconnect:
                    return
                conn = None
                continue
            self.answered.append((sent, response.status))
            if response.will_close:  # Connection: close, the server's clean goodbye
                self.closed_by_server = True
                conn.close()
                if not self.reconnect:
                    return
                conn = None
