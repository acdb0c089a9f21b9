"""Audit events as DICOM audit messages (PS3.15 Annex A.5, the IHE ATNA vocabulary) and as RFC 5424 syslog.

RadPilot's actions are dotted verbs (``dimse.store``, ``web.page``, ``auth.login.failed``
...). :func:`event_code` maps each to the DICOM audit event it is (DCM codes of CID 400
and CID 401) with its event action code, by the longest matching prefix.
"""

from __future__ import annotations

import socket
import xml.etree.ElementTree as ET
from datetime import UTC

from radpilot.security.audit import AuditEvent

# prefix -> (EventID code, meaning, EventActionCode, EventTypeCode or None)
EVENT_CODES: dict[str, tuple[str, str, str, tuple[str, str] | None]] = {
    "dimse.store": ("110104", "DICOM Instances Transferred", "C", None),
    "dicomweb.stow": ("110104", "DICOM Instances Transferred", "C", None),
    "dimse.find": ("110112", "Query", "E", None),
    "dicomweb.qido": ("110112", "Query", "E", None),
    "dimse.move": ("110104", "DICOM Instances Transferred", "R", None),
    "dimse.get": ("110104", "DICOM Instances Transferred", "R", None),
    "dicomweb.wado": ("110103", "DICOM Instances Accessed", "R", None),
    "viewer": ("110103", "DICOM Instances Accessed", "R", None),
    "web.page": ("110110", "Patient Record", "R", None),
    "web.api": ("110110", "Patient Record", "R", None),
    "report": ("110110", "Patient Record", "R", None),
    "auth.login": ("110114", "User Authentication", "E", ("110122", "Login")),
    "auth.logout": ("110114", "User Authentication", "E", ("110123", "Logout")),
    "export": ("110106", "Export", "R", None),
    "deid": ("110106", "Export", "R", None),
    "config": ("110113", "Security Alert", "E", ("110129", "Security Configuration")),
    "model": ("110100", "Application Activity", "E", None),
}
DEFAULT_CODE = ("110100", "Application Activity", "E", None)
OUTCOME_INDICATOR = {"success": "0", "failure": "4", "refused": "4", "error": "8"}


def event_code(action: str) -> tuple[str, str, str, tuple[str, str] | None]:
    """The DICOM audit event of a RadPilot action (longest dotted prefix wins)."""
    best = None
    for prefix, code in EVENT_CODES.items():
        if (action == prefix or action.startswith(prefix + ".")) and (best is None or len(prefix) > len(best[0])):
            best = (prefix, code)
    return best[1] if best else DEFAULT_CODE


def _code(parent: ET.Element, tag: str, code: str, meaning: str) -> None:
    ET.SubElement(parent, tag, {"csd-code": code, "codeSystemName": "DCM", "originalText": meaning})


def audit_message(event: AuditEvent, audit_source_id: str) -> ET.Element:
    """The AuditMessage element of one event (EventIdentification, ActiveParticipant, AuditSourceIdentification, ParticipantObjectIdentification)."""
    code, meaning, action_code, type_code = event_code(event.action)
    at = event.at if event.at.tzinfo is not None else event.at.replace(tzinfo=UTC)
    root = ET.Element("AuditMessage")
    ident = ET.SubElement(
        root,
        "EventIdentification",
        {
            "EventActionCode": action_code,
            "EventDateTime": at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "EventOutcomeIndicator": OUTCOME_INDICATOR.get(event.outcome, "4"),
        },
    )
    _code(ident, "EventID", code, meaning)
    if type_code is not None:
        _code(ident, "EventTypeCode", *type_code)
    if event.reason:
        ET.SubElement(ident, "EventOutcomeDescription").text = event.reason
    participant = {"UserID": event.who, "UserIsRequestor": "true"}
    if event.source:
        host = event.source.rsplit("@", 1)[-1].rsplit(":", 1)[0].strip("[]")
        participant["NetworkAccessPointID"] = host
        participant["NetworkAccessPointTypeCode"] = "2" if host.replace(".", "").isdigit() or ":" in host else "1"
        if "@" in event.source:
            participant["AlternativeUserID"] = event.source.split("@", 1)[0]
    ET.SubElement(root, "ActiveParticipant", participant)
    ET.SubElement(root, "AuditSourceIdentification", {"AuditSourceID": audit_source_id})
    obj = ET.SubElement(root, "ParticipantObjectIdentification", {"ParticipantObjectID": event.target, "ParticipantObjectTypeCode": "2"})
    if event.target[:1].isdigit():  # a UID
        _code(obj, "ParticipantObjectIDTypeCode", "110180", "Study Instance UID")
    else:
        ET.SubElement(obj, "ParticipantObjectIDTypeCode", {"csd-code": "12", "codeSystemName": "RFC-3881", "originalText": "URI"})
    ET.SubElement(obj, "ParticipantObjectDetail", {"type": "radpilot-seq", "value": str(event.seq)})
    return root


def audit_xml(event: AuditEvent, audit_source_id: str) -> str:
    return ET.tostring(audit_message(event, audit_source_id), encoding="unicode")


def syslog_message(event: AuditEvent, audit_source_id: str, hostname: str | None = None) -> bytes:
    """One RFC 5424 message (facility authpriv 10, severity notice 5 or warning 4) carrying the audit XML, as IHE ATNA asks."""
    severity = 5 if event.outcome == "success" else 4
    pri = 10 * 8 + severity
    at = event.at if event.at.tzinfo is not None else event.at.replace(tzinfo=UTC)
    timestamp = at.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    host = (hostname or socket.gethostname() or "-")[:255]
    header = f"<{pri}>1 {timestamp} {host} radpilot - IHE+RFC-3881 - "
    return header.encode("utf-8") + b"\xef\xbb\xbf" + audit_xml(event, audit_source_id).encode("utf-8")
