"""`meshproxy webhook` over real HTTPS (issue 16): real AdmissionReview v1 documents in, JSONPatch out; the
patch, applied with the `jsonpatch` library, gives exactly what `meshproxy inject` writes for the same pod."""

from __future__ import annotations

import base64
import copy
import http.client
import json
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
import yaml

from meshproxy.kubernetes.webhook import MUTATE_PATH, CertificateReloader

from .harness import MESHPROXY, REPO_ROOT, clean_environ, free_ports, run_meshproxy

MESH = REPO_ROOT / "tests" / "fixtures" / "meshes" / "colour-kubernetes.yaml"
REVIEW = REPO_ROOT / "tests" / "fixtures" / "kubernetes" / "admission-review-create-pod.json"
FLAGS = ("--config", str(MESH), "--image", "repo/meshproxy:0.1.0", "--config-url", "https://cfg/mesh.json")
START_TIMEOUT_S = 20.0


class Webhook:
    def __init__(self, port: int, ca: str, process: subprocess.Popen[bytes], log: Path) -> None:
        self.port, self.process, self.log = port, process, log
        self.context = ssl.create_default_context(cafile=ca)

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        connection = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.context, timeout=10)
        try:
            connection.request(method, path, body=body, headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def review(self, document: dict[str, Any]) -> dict[str, Any]:
        status, body = self.request("POST", MUTATE_PATH, json.dumps(document).encode())
        assert status == 200, body
        answer: dict[str, Any] = json.loads(body)
        assert answer["apiVersion"] == "admission.k8s.io/v1" and answer["kind"] == "AdmissionReview"
        assert answer["response"]["uid"] == document["request"]["uid"]
        response: dict[str, Any] = answer["response"]
        return response


@pytest.fixture(scope="module")
def webhook(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Webhook]:
    import trustme

    workdir = tmp_path_factory.mktemp("webhook")
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "meshproxy-webhook.meshproxy-system.svc")
    leaf.private_key_and_cert_chain_pem.write_to_path(str(workdir / "tls.pem"))
    ca.cert_pem.write_to_path(str(workdir / "ca.pem"))
    (port,) = free_ports(1)
    log = workdir / "webhook.log"
    args = [str(MESHPROXY), "webhook", *FLAGS, "--tls-cert", str(workdir / "tls.pem"),
            "--tls-key", str(workdir / "tls.pem"), "--address", "127.0.0.1", "--port", str(port)]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, env=clean_environ(), start_new_session=True
        )
    hook = Webhook(port, str(workdir / "ca.pem"), process, log)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert process.poll() is None, log.read_text()
            try:
                if hook.request("GET", "/healthz")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield hook
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def review(**changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(REVIEW.read_text())
    document["request"].update(changes)
    return document


def patched(pod: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    assert response["allowed"] is True and response["patchType"] == "JSONPatch"
    patch = json.loads(base64.b64decode(response["patch"]))
    result: dict[str, Any] = jsonpatch.apply_patch(pod, patch)
    return result


def injected_by_the_cli(pod: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    source = tmp_path / "pod.yaml"
    source.write_text(yaml.safe_dump(pod))
    done = run_meshproxy(["inject", *FLAGS, str(source)], env=clean_environ(), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = yaml.safe_load(done.stdout)
    return result


def test_a_selected_pod_gets_the_same_patch_as_inject_writes(webhook: Webhook, tmp_path: Path) -> None:
    document = review()
    pod = document["request"]["object"]
    response = webhook.review(document)
    result = patched(pod, response)
    assert result == injected_by_the_cli(pod, tmp_path)
    names = [c["name"] for c in result["spec"]["containers"]]
    assert names == ["app", "envoy"] and result["spec"]["initContainers"][0]["name"] == "proxyinit"
    assert result["spec"]["volumes"] == pod["spec"]["volumes"]  # what was there stays
    # the API server re-sends an injected pod (reinvocation, a retried create): nothing more to do
    again = webhook.review(review(object=result))
    assert again["allowed"] is True and "patch" not in again


def test_opted_out_pods_and_updates_are_allowed_untouched(webhook: Webhook) -> None:
    document = review()
    document["request"]["object"]["metadata"]["annotations"]["appmesh.k8s.aws/sidecarInjectorWebhook"] = (
        "disabled"
    )
    response = webhook.review(document)
    assert response["allowed"] is True and "patch" not in response
    update = webhook.review(review(operation="UPDATE"))
    assert update["allowed"] is True and "patch" not in update


def test_a_pod_no_virtual_node_selects_is_refused_in_an_enabled_namespace(webhook: Webhook) -> None:
    document = review()
    document["request"]["object"]["metadata"]["labels"] = {"app": "nobody"}
    response = webhook.review(document)
    assert response["allowed"] is False
    assert "no matching VirtualNode or VirtualGateway found" in response["status"]["message"]


def test_the_virtual_node_annotation_and_a_namespace_from_the_request(
    webhook: Webhook, tmp_path: Path
) -> None:
    document = review(namespace="colours")
    pod = document["request"]["object"]
    del pod["metadata"]["namespace"]  # the API server does not always fill it in; the request names it
    pod["metadata"]["labels"] = {"app": "unlabelled"}
    pod["metadata"]["annotations"]["appmesh.k8s.aws/virtualNode"] = "front"
    result = patched(copy.deepcopy(pod), webhook.review(document))
    env = {e["name"]: e.get("value") for e in result["spec"]["containers"][1]["env"]}
    assert env["APPMESH_RESOURCE_ARN"] == "mesh/demo/virtualNode/front"


def test_bad_requests_and_health(webhook: Webhook) -> None:
    assert webhook.request("POST", MUTATE_PATH, b"{not json")[0] == 400
    status, body = webhook.request(
        "POST", MUTATE_PATH, json.dumps({"apiVersion": "admission.k8s.io/v1beta1"}).encode()
    )
    assert status == 400 and b"AdmissionReview of admission.k8s.io/v1" in body
    assert webhook.request("GET", "/healthz") == (200, b"ok\n")
    with socket.create_connection(("127.0.0.1", webhook.port), timeout=5) as plain:  # HTTPS only
        plain.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert not plain.recv(100).startswith(b"HTTP/1.1 200")


def test_the_serving_certificate_is_reloaded_when_its_files_change(tmp_path: Path) -> None:
    import trustme

    first, second = trustme.CA(), trustme.CA()
    pem = tmp_path / "tls.pem"
    first.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(pem))
    reloader = CertificateReloader(str(pem), str(pem))
    assert reloader.check() is False  # unchanged
    time.sleep(0.01)
    second.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(pem))
    assert reloader.check() is True
    pem.write_text("not a certificate")
    assert reloader.check() is False  # a half-written renewal keeps the current certificate


def test_the_manifests_select_enabled_namespaces_and_fail_closed() -> None:
    documents = {
        d["kind"]: d
        for d in yaml.safe_load_all((REPO_ROOT / "deploy" / "kubernetes" / "webhook.yaml").read_text())
    }
    (hook,) = documents["MutatingWebhookConfiguration"]["webhooks"]
    assert hook["namespaceSelector"] == {"matchLabels": {"appmesh.k8s.aws/sidecarInjectorWebhook": "enabled"}}
    assert hook["failurePolicy"] == "Fail" and hook["admissionReviewVersions"] == ["v1"]
    assert hook["clientConfig"]["service"]["path"] == MUTATE_PATH
    assert hook["rules"] == [
        {"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}
    ]
    service = documents["Service"]["spec"]["ports"][0]
    (container,) = documents["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["meshproxy", "webhook"]
    assert f"--port={service['targetPort']}" in container["args"]
    assert documents["Namespace"]["metadata"].get("labels") is None  # the webhook never injects itself
    from meshproxy.kubernetes.webhook import main

    with pytest.raises(SystemExit) as parsed:  # every flag the Deployment passes exists
        main([*container["args"], "--help"])
    assert parsed.value.code == 0
