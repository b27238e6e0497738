"""Transparent interception: App Mesh's nat chains (APPMESH_INGRESS / APPMESH_EGRESS) as data.

spec.py      the settings (route-manager variables or ECS proxyConfiguration names) -> InterceptionSpec
rules.py     pure: spec -> iptables-restore text; iptables-save text -> what is installed; apply/clean plans
apply.py     the only module that runs iptables / ip6tables (-save / -restore)
commands.py  `meshproxy iptables apply | clean | status | render`
guard.py     start-up check: the proxy's own UID must not be redirected
"""
