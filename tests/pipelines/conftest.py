"""The fake Kubeflow Pipelines API server, shared by the remote-path tests."""

import threading
from http.server import ThreadingHTTPServer

import pytest

from tests.pipelines.test_remote import FakeKfp


@pytest.fixture
def kfp_server():
    FakeKfp.calls, FakeKfp.state = [], {}
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeKfp)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
