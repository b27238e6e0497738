"""The ingress policy (port 15000): traffic redirected to the application's ports goes to the local app.

The connection's original port picks the virtual-node listener (spec §2.4); its protocol picks the handler:
`tcp` -> the TCP proxy at once; `http2`/`grpc` -> h2c (prior knowledge) or HTTP/1.1 by the first bytes (an
HTTP/1.1 client may then ask `Upgrade: h2c`); `http` -> the HTTP/1.1 connection manager at once.
"""

from __future__ import annotations

import asyncio

from meshproxy.config.snapshot import ListenerProtocol
from meshproxy.listeners.detect import Detected, Detection
from meshproxy.listeners.dispatch import ConnectionDispatcher
from meshproxy.listeners.policy import PolicyListener

SNIFF_TIMEOUT_S = 15.0  # Envoy's listener-filter timeout: a silent http2/grpc client is then served HTTP/1.1
_HTTP2_PROTOCOLS = (ListenerProtocol.HTTP2, ListenerProtocol.GRPC)


class IngressPolicy:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<IngressPolicy>"

    def accept(self, listener: PolicyListener) -> asyncio.Protocol:
        return ConnectionDispatcher(listener, self)

    def admit_request(self, listener: PolicyListener) -> bool:
        return True

    def on_connect(self, dispatcher: ConnectionDispatcher) -> None:
        listener = dispatcher.listener
        # With one listener the original port changes nothing: don't pay for reading it.
        port = dispatcher.original_port if len(listener.snapshot.ingress) > 1 else None
        ingress = listener.ingress_listener(port)
        if ingress is not None and ingress.protocol is ListenerProtocol.TCP:
            cluster = listener.cluster(ingress.cluster)
            if cluster is not None:
                dispatcher.start_tcp(cluster, idle=ingress.idle_timeout, retry=None)
                return
        if ingress is not None and ingress.protocol in _HTTP2_PROTOCOLS:
            dispatcher.sniff(SNIFF_TIMEOUT_S)
            return
        dispatcher.hand_to_http()

    def on_detected(self, dispatcher: ConnectionDispatcher, detection: Detection) -> None:
        if detection.kind is Detected.HTTP2:
            dispatcher.hand_to_h2()
        else:
            dispatcher.hand_to_http()  # HTTP/1.1, or bytes the HTTP/1.1 manager will answer 400

    def on_silence(self, dispatcher: ConnectionDispatcher) -> None:
        dispatcher.hand_to_http()
