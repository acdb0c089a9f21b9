"""Radiology reports: the report model, templates pre-filled from AI findings, and the outputs of a signed report.

Sits beside the validation workbench, above the engine: it reads a study's AI findings from
the engine's job records, the analyses' output declarations (never naming an analysis),
stores the signed report's DICOM SR in the archive and queues its SR, HL7 ORU and FHIR
deliveries in the engine's outbox.
"""
