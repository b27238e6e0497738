"""Which way a listener's traffic flows; App Mesh names listeners and stats after it (`lds_ingress_...`)."""

from __future__ import annotations

import enum


class ListenerDirection(enum.StrEnum):
    INGRESS = "ingress"
    EGRESS = "egress"
    GATEWAY = "gateway"
