"""meshproxy's benchmark harness: meshproxy and Envoy side by side, behind the same App Mesh config.

`python -m bench.run` is the entry point; bench/README.md describes it. The pure parts (config rendering,
output parsing, /proc parsing, the results file) live in their own modules so that tests/unit/bench can run
them without starting any process.
"""
