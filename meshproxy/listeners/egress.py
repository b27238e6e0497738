"""The egress policy (port 15001): the application's outbound traffic, told apart by its first bytes.

App Mesh's Envoy chose filter chains by destination port and, for TLS, by SNI; meshproxy has one egress port
for everything, so it looks at the first bytes (listeners/detect.py, spec §2.4). HTTP/1.x and h2c go to the
connection managers (routed by Host); TLS is passed through untouched when the mesh allows it (ALLOW_ALL, or
an `*.amazonaws.com` SNI under DROP_ALL, as App Mesh did); other bytes follow the TCP route for the original
port, or pass through to the original destination under ALLOW_ALL. What is not allowed is closed.

A client may connect first and send later (connection pools, pre-warming). The original destination says
what silence means: to a port one of the node's HTTP backends listens on, it is an HTTP client still to
speak, served by the HTTP/1.1 connection manager (whose idle and request-headers timeouts then apply);
elsewhere, after Envoy's listener-filter timeout of 15 s, a server-first protocol (MySQL, SMTP) for the TCP
route or passthrough (issue 14: the old 1 s lost three connections in four of such clients under DROP_ALL).
"""

from __future__ import annotations

import asyncio

from meshproxy.config.snapshot import EgressFilter
from meshproxy.listeners.detect import Detected, Detection
from meshproxy.listeners.dispatch import ConnectionDispatcher
from meshproxy.listeners.policy import PolicyListener
from meshproxy.router.match import pick_weighted

LISTENER_FILTER_TIMEOUT_S = 15.0  # Envoy's listener_filters_timeout: how long silence means "still to speak"
AWS_API_SUFFIX = ".amazonaws.com"


class EgressPolicy:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<EgressPolicy>"

    def accept(self, listener: PolicyListener) -> asyncio.Protocol:
        return ConnectionDispatcher(listener, self)

    def admit_request(self, listener: PolicyListener) -> bool:
        return True

    def on_connect(self, dispatcher: ConnectionDispatcher) -> None:
        dispatcher.sniff(LISTENER_FILTER_TIMEOUT_S)

    def on_detected(self, dispatcher: ConnectionDispatcher, detection: Detection) -> None:
        kind = detection.kind
        if kind is Detected.HTTP1:
            dispatcher.hand_to_http()
        elif kind is Detected.HTTP2:
            dispatcher.hand_to_h2()
        elif kind is Detected.TLS:
            snapshot = dispatcher.listener.snapshot
            allowed = snapshot.egress_filter is EgressFilter.ALLOW_ALL or (
                detection.sni is not None and detection.sni.endswith(AWS_API_SUFFIX)
            )
            if allowed and dispatcher.original_destination is not None:
                dispatcher.passthrough()
            else:
                self._tcp(dispatcher)
        else:
            self._tcp(dispatcher)

    def on_silence(self, dispatcher: ConnectionDispatcher) -> None:
        """Nothing (complete) said within the listener-filter timeout: to an HTTP backend's port, an HTTP
        client that has not spoken yet; elsewhere, a server-first protocol."""
        port = dispatcher.original_port
        if port is not None and port in dispatcher.listener.snapshot.http_ports:
            dispatcher.hand_to_http()
            return
        self._tcp(dispatcher)

    def _tcp(self, dispatcher: ConnectionDispatcher) -> None:
        """Non-HTTP: the TCP route of the original port, else passthrough (ALLOW_ALL), else close."""
        listener = dispatcher.listener
        snapshot = listener.snapshot
        port = dispatcher.original_port
        route = snapshot.tcp_routes.get(port) if port is not None else None
        if route is not None:
            target = pick_weighted(route)
            cluster = listener.cluster(target.cluster) if target is not None else None
            if cluster is not None:
                dispatcher.start_tcp(cluster, idle=route.idle_timeout, retry=route.retry)
                return
        if snapshot.egress_filter is EgressFilter.ALLOW_ALL and dispatcher.original_destination is not None:
            dispatcher.passthrough()
            return
        listener.tcp_stats.downstream_cx_no_route += 1
        dispatcher.close()
