"""Where the proxies' telemetry goes during a telemetry-on scenario: a counting X-Ray daemon stand-in and the
access-log files, so the report can say how much telemetry each proxy really produced per request.

`XrayReceiver` binds a UDP socket on 127.0.0.1 and drains it in a daemon thread, counting datagrams and
the ones that start with the X-Ray daemon header (`{"format":"json","version":1}` + newline, spec §5.4).
It keeps nothing but counts; the socket's receive buffer is raised so bursts are not dropped by the kernel.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from pathlib import Path

XRAY_HEADER = b'{"format":"json","version":1}\n'
RECEIVE_BUFFER = 8 << 20  # bytes; the kernel caps it at net.core.rmem_max


class XrayReceiver:
    """Counts X-Ray segment datagrams sent to 127.0.0.1:`port` until `close()`."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)  # wakes the thread so that close() is prompt
        self.port: int = self.sock.getsockname()[1]
        self.datagrams = 0
        self.segments = 0  # datagrams with the daemon header
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._drain, name=f"xray-receiver-{self.port}", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return f"<XrayReceiver 127.0.0.1:{self.port} datagrams={self.datagrams} segments={self.segments}>"

    def _drain(self) -> None:
        buffer = bytearray(65536)
        header = len(XRAY_HEADER)
        while not self._stopped.is_set():
            try:
                n = self.sock.recv_into(buffer)
            except TimeoutError:
                continue
            except OSError:
                return
            self.datagrams += 1
            if n > header and buffer[:header] == XRAY_HEADER:
                self.segments += 1

    def close(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=2.0)
        self.sock.close()


def count_lines(path: Path) -> int:
    """Newline-terminated lines in `path` (0 when it does not exist), read in 1 MiB blocks."""
    try:
        with path.open("rb") as f:
            return sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 20), b""))
    except FileNotFoundError:
        return 0
