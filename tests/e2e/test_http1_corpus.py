"""Every raw input of the HTTP/1.1 corpus (tests/corpus/http1/) through a running meshproxy, on both
parsers (issue 11): the same verdict from httptools and h11 (statuses and close, as the corpus records
them), and an upstream that receives exactly the requests the proxy answered from it, with the same body
boundaries and no header line the client did not send.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .harness import MeshProxy, running_proxy
from .http1_corpus import CORPUS_HOST, CorpusCase, RecordingUpstream, injected_fields, load_corpus, send_case
from .resources import mesh, node_arn, service_via_node, virtual_node

CASES = load_corpus()


def corpus_mesh(upstream_port: int) -> list[dict[str, object]]:
    """`front` (the proxy's node) reaches CORPUS_HOST, served by the recording upstream."""
    return [
        mesh(),
        virtual_node("sink", upstream_port),
        virtual_node("front", 18999, backends=[CORPUS_HOST]),
        service_via_node(CORPUS_HOST, "sink"),
    ]


@pytest.fixture(scope="module")
def upstream() -> Iterator[RecordingUpstream]:
    with RecordingUpstream() as recording:
        yield recording


@pytest.fixture(scope="module")
def corpus_proxy(
    upstream: RecordingUpstream, http1_parser: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MeshProxy]:
    workdir = tmp_path_factory.mktemp(f"corpus-{http1_parser}")
    with running_proxy(corpus_mesh(upstream.port), node_arn("front"), workdir, parser=http1_parser) as proxy:
        yield proxy


def test_the_corpus_is_large_enough_and_documented() -> None:
    assert len(CASES) >= 100
    assert all(case.source for case in CASES)
    assert all(case.envoy is None or case.envoy.why for case in CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_corpus_case(case: CorpusCase, corpus_proxy: MeshProxy, upstream: RecordingUpstream) -> None:
    before = len(upstream.received)
    verdict = send_case(corpus_proxy.egress_port, case.raw, len(case.expect), close=case.close)
    received = upstream.received[before:]
    assert (verdict.statuses, verdict.closed) == (case.expect, case.close), (
        f"{case.name}: got {verdict}, corpus says {list(case.expect)} {'close' if case.close else 'open'}"
    )
    # The upstream answered exactly the requests whose answers the client got, and no others.
    assert tuple(r.summary for r in received) == case.upstream, [r.summary for r in received]
    assert sum(verdict.from_upstream) == len(received), verdict
    for request in received:
        assert not injected_fields(case.raw, request), (case.name, request)
    assert corpus_proxy.process is not None and corpus_proxy.process.poll() is None, "the proxy died"
    assert "Traceback" not in corpus_proxy.stderr_text(), corpus_proxy.output_tail()
