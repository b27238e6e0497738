"""meshproxy: an App Mesh-compatible service-mesh sidecar proxy."""

from meshproxy import native

__version__ = "0.1.0"

# The compiled request path when the install has one and it loads, else the sources (MESHPROXY_PURE=1
# asks for them): before any other meshproxy module is imported.
native.choose_form()
