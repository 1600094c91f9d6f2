"""``--bind_address``: the address the predictor's HTTP and gRPC ports listen on.

KServe 0.21's model server listens on every interface, hard-coded: ``host="0.0.0.0"`` in
``kserve/protocol/rest/server.py`` (``RESTServer.__init__``) and ``[::]:<port>`` in
``kserve/protocol/grpc/server.py`` (``GRPCServer.start``). In a pod that is right (the
address is the pod's own); on a laptop it serves the model to the whole network, so local
starts pass 127.0.0.1. This swaps in the given address where the two servers are built.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)
EVERYWHERE = ("0.0.0.0", "::", "[::]")


def listen_on(address: str) -> None:
    """Make the next ``ModelServer.start()`` listen on ``address`` (HTTP and gRPC)."""
    if address in EVERYWHERE:
        return
    from kserve import model_server
    from kserve.protocol.grpc import server as grpc_server

    rest_class = model_server.RESTServer

    class BoundRESTServer(rest_class):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.config.host = address  # uvicorn reads it when it binds, at start

    model_server.RESTServer = BoundRESTServer
    grpc_server.aio = _BoundAio(grpc_server.aio, address)
    logger.info("listening on %s only", address)


class _BoundAio:
    """``grpc.aio`` whose servers add their port on ``address`` instead of ``[::]``."""

    def __init__(self, aio: Any, address: str) -> None:
        self._aio, self._address = aio, address

    def __getattr__(self, name: str) -> Any:
        return getattr(self._aio, name)

    def server(self, *args: Any, **kwargs: Any) -> Any:
        server = self._aio.server(*args, **kwargs)
        add = server.add_insecure_port
        host = f"[{self._address}]" if ":" in self._address else self._address
        server.add_insecure_port = lambda addr: add(f"{host}:{addr.rsplit(':', 1)[1]}")
        return server
