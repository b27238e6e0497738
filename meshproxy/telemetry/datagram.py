"""A non-blocking datagram socket to one destination: UDP `host:port` or a unix datagram socket path.

Used by the DogStatsD flusher and the X-Ray sender. `send` never blocks and never raises: a datagram the
kernel refuses (buffer full, nobody bound to the unix path, message too long) is counted in
`server.telemetry_send_errors_total`, as Envoy only logs such failures at debug level (spec §5.4).
"""

from __future__ import annotations

import ipaddress
import logging
import socket

from meshproxy.telemetry.stats import ServerStats

log = logging.getLogger(__name__)


class DatagramSender:
    """Sends datagrams to `(host, port)` or to the unix datagram socket `path` (which wins when given)."""

    def __init__(
        self, server: ServerStats, *, host: str = "127.0.0.1", port: int = 0, path: str | None = None
    ):
        self.server = server
        self.host = host
        self.port = port
        self.path = path
        self._sock: socket.socket | None = None
        self._address: tuple[str, int] | tuple[str, int, int, int] | str | None = None
        self._warned = False

    def __repr__(self) -> str:
        target = self.path if self.path is not None else f"{self.host}:{self.port}"
        return f"<DatagramSender {target} open={self._sock is not None}>"

    def open(self) -> bool:
        """Create the socket (resolving a non-literal host once). False, and logged, when that fails."""
        if self._sock is not None:
            return True
        try:
            if self.path is not None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._address = self.path
            else:
                try:
                    family = (
                        socket.AF_INET6 if ipaddress.ip_address(self.host).version == 6 else socket.AF_INET
                    )
                    address: tuple[str, int] | tuple[str, int, int, int] = (self.host, self.port)
                except ValueError:
                    info = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_DGRAM)[0]
                    family = info[0]
                    address = (str(info[4][0]), int(info[4][1]))
                sock = socket.socket(family, socket.SOCK_DGRAM)
                self._address = address
            sock.setblocking(False)
        except OSError as exc:
            log.warning("telemetry: cannot open datagram socket for %r: %s", self, exc)
            return False
        self._sock = sock
        return True

    def send(self, data: bytes) -> bool:
        if self._sock is None and not self.open():
            self.server.telemetry_send_errors_total += 1
            return False
        assert self._sock is not None and self._address is not None
        try:
            self._sock.sendto(data, self._address)
        except OSError as exc:
            self.server.telemetry_send_errors_total += 1
            if not self._warned:  # once: a missing daemon must not flood the log
                self._warned = True
                log.warning("telemetry: datagram to %r failed: %s", self, exc)
            return False
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
