"""Connections to other DICOM nodes: DIMSE (pynetdicom) and DICOMweb."""
