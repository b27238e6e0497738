"""Kubernetes sidecar injection: what App Mesh's controller did at pod admission, with meshproxy's images.

`injector.py` decides and builds (pure), `manifests.py` is `meshproxy inject` over manifest files, and
`webhook.py` is `meshproxy webhook`, the same transformation as a mutating admission webhook.
"""
