"""POST a FHIR resource (JSON) to a FHIR server and say whether it was taken."""

from __future__ import annotations

import json
import logging

import httpx

logger = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"


class FhirDeliveryError(RuntimeError):
    """The FHIR server did not take the resource; the message has its status and OperationOutcome text."""


def _outcome_text(response: httpx.Response) -> str:
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return response.text[:500]
    if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome":
        issues = body.get("issue") or []
        return "; ".join(str(i.get("diagnostics") or i.get("details", {}).get("text") or i.get("code")) for i in issues)[:500]
    return json.dumps(body)[:500]


def post_resource(base_url: str, payload: bytes, *, timeout_s: float = 30.0) -> str:
    """POST ``payload`` (one resource or a transaction Bundle, JSON) to ``base_url``; the Location the server gave.

    A Bundle goes to the base URL (a transaction); any other resource to ``base_url/<resourceType>``.
    """
    try:
        resource_type = json.loads(payload)["resourceType"]
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise FhirDeliveryError(f"the payload is not a FHIR resource in JSON: {exc}") from exc
    url = base_url.rstrip("/") + ("" if resource_type == "Bundle" else f"/{resource_type}")
    try:
        response = httpx.post(url, content=payload, headers={"Content-Type": FHIR_JSON, "Accept": FHIR_JSON}, timeout=timeout_s)
    except httpx.HTTPError as exc:
        raise FhirDeliveryError(f"FHIR server {url} could not be reached: {exc}") from exc
    if response.status_code not in (200, 201):
        raise FhirDeliveryError(f"FHIR server {url} answered HTTP {response.status_code}: {_outcome_text(response)}")
    location = response.headers.get("Location", "")
    logger.info("FHIR resource delivered", extra={"url": url, "status": response.status_code, "location": location})
    return location
