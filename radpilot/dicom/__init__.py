"""DICOM file handling: parsing and validation of Part 10 files, volumes, encoders."""
