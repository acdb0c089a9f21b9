"""The FHIR client: a taken resource returns, a refusal raises with the server's OperationOutcome text, bad payloads are named."""

from __future__ import annotations

import json
import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from threading import Thread

import pytest

from radpilot.pacs.fhir_client import FhirDeliveryError, post_resource

OBSERVATION = {"resourceType": "Observation", "status": "final", "code": {"text": "CTR"}, "valueQuantity": {"value": 0.5}}


def test_a_valid_resource_is_taken(fhir_server) -> None:
    post_resource(fhir_server.base_url, json.dumps(OBSERVATION).encode(), timeout_s=10)
    [received] = fhir_server.received
    assert received.get_resource_type() == "Observation"


def test_an_invalid_resource_is_refused_with_the_servers_diagnostics(fhir_server) -> None:
    bad = dict(OBSERVATION, valueQuantity={"value": "about half"})
    with pytest.raises(FhirDeliveryError, match=r"(?s)answered HTTP 400: .*valueQuantity"):
        post_resource(fhir_server.base_url, json.dumps(bad).encode(), timeout_s=10)


@pytest.mark.parametrize(
    ("payload", "problem"), [(b"{not json", "not a FHIR resource"), (b'{"id": 1}', "not a FHIR resource"), (b"\xff", "not a FHIR")]
)
def test_a_payload_that_is_not_a_fhir_resource_is_named(payload: bytes, problem: str) -> None:
    with pytest.raises(FhirDeliveryError, match=problem):
        post_resource("http://127.0.0.1:9", payload)


def test_a_non_json_error_answer_is_reported_verbatim() -> None:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # noqa: ANN002
            pass

        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(502)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<h1>bad gateway</h1>")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(FhirDeliveryError, match=r"HTTP 502: <h1>bad gateway</h1>"):
            post_resource(f"http://127.0.0.1:{server.server_address[1]}/fhir", json.dumps(OBSERVATION).encode(), timeout_s=10)
    finally:
        server.shutdown()
        server.server_close()


def test_an_unreachable_server_is_named() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(FhirDeliveryError, match="could not be reached"):
        post_resource(f"http://127.0.0.1:{port}/fhir", json.dumps(OBSERVATION).encode(), timeout_s=5)
