"""Capture TCP payloads on one interface of a namespace, for the netns tests (run as root). Not a test module.

wiretap.py IFACE PORT OUTFILE
    Read every frame on IFACE (an AF_PACKET socket), keep the TCP payload of IPv4 segments to or from PORT,
    print "READY", and on SIGTERM write {"to_port": hex, "from_port": hex} (payloads in arrival order,
    retransmissions included) to OUTFILE.
"""

from __future__ import annotations

import json
import signal
import socket
import struct
import sys

ETH_P_ALL = 0x0003
_IPV4 = 0x0800


def main(argv: list[str]) -> int:
    iface, port, out = argv[0], int(argv[1]), argv[2]
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(ETH_P_ALL))
    sock.bind((iface, 0))
    sock.settimeout(0.2)
    payloads = {"to_port": bytearray(), "from_port": bytearray()}
    running = [True]

    def stop(*_: object) -> None:
        running[0] = False

    signal.signal(signal.SIGTERM, stop)
    print("READY", flush=True)
    while running[0]:
        try:
            frame = sock.recv(65536)
        except TimeoutError:
            continue
        if len(frame) < 34 or struct.unpack_from("!H", frame, 12)[0] != _IPV4:
            continue
        ihl = (frame[14] & 0x0F) * 4
        if frame[23] != 6:  # TCP
            continue
        total = struct.unpack_from("!H", frame, 16)[0]
        tcp = 14 + ihl
        sport, dport = struct.unpack_from("!HH", frame, tcp)
        offset = (frame[tcp + 12] >> 4) * 4
        payload = frame[tcp + offset : 14 + total]
        if not payload:
            continue
        if dport == port:
            payloads["to_port"] += payload
        elif sport == port:
            payloads["from_port"] += payload
    with open(out, "w") as handle:
        json.dump({k: v.hex() for k, v in payloads.items()}, handle)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
