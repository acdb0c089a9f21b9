"""RadPilot's web server: DICOMweb, the JSON API, the reading-room pages and OHIF."""
