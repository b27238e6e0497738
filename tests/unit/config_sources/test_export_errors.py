"""`meshproxy export`, the pure parts: which API errors skip a kind and which stop the export; JSON output.

The walk itself runs against moto's server in tests/e2e/test_export.py.
"""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest
from botocore.exceptions import ClientError

from meshproxy.config.export import ExportError, MeshExport, MeshExporter, _NotImplemented, render_export


def client_error(code: str, status: int, message: str = "") -> ClientError:
    response: Any = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, "ListVirtualServices")


@pytest.mark.parametrize(
    ("code", "status"),
    [("404", 404), ("501", 501), ("NotImplemented", 501), ("UnknownOperationException", 400), ("", 501)],
)
def test_an_operation_the_endpoint_lacks_is_skipped(code: str, status: int) -> None:
    translated = MeshExporter._translate("ListVirtualServices", client_error(code, status))
    assert isinstance(translated, _NotImplemented)
    assert translated.operation == "ListVirtualServices"


@pytest.mark.parametrize(
    ("code", "status", "message"),
    [
        ("NotFoundException", 404, "mesh apps not found"),  # a real App Mesh 404 is an error, not a gap
        ("ForbiddenException", 403, "not authorised"),
        ("TooManyRequestsException", 429, "slow down"),
    ],
)
def test_app_mesh_errors_stop_the_export_with_operation_code_and_message(
    code: str, status: int, message: str
) -> None:
    translated = MeshExporter._translate("ListVirtualServices", client_error(code, status, message))
    assert isinstance(translated, ExportError)
    assert str(translated) == f"ListVirtualServices: {code}: {message}"


def test_render_writes_timestamps_as_iso_8601_and_keeps_the_describe_shape() -> None:
    export = MeshExport()
    created = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    export.add("mesh", "mesh", {"meshName": "apps", "metadata": {"createdAt": created}, "spec": {}})
    document = json.loads(render_export(export))
    assert document == [
        {"mesh": {"meshName": "apps", "metadata": {"createdAt": "2026-01-02T03:04:05+00:00"}, "spec": {}}}
    ]
    assert export.counts == {"mesh": 1}


def test_render_refuses_values_json_cannot_hold() -> None:
    export = MeshExport()
    export.add("mesh", "mesh", {"meshName": "apps", "odd": object()})
    with pytest.raises(TypeError, match="cannot write object as JSON"):
        render_export(export)
