"""meshproxy: an App Mesh-compatible service-mesh sidecar proxy."""

__version__ = "0.1.0"
