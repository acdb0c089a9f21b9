"""De-identification: the PS3.15 Annex E Basic Application Level Confidentiality Profile and its options."""

from radpilot.dicom.deid.engine import RISKY_SOP_CLASSES, BurnedInAnnotationRefused, DeidConfig, Deidentifier, SafePrivate
from radpilot.dicom.deid.mapping import DeidKey, Mapping, MappingStore, write_new_key
from radpilot.dicom.deid.run import DeidReport, deidentify_files, iter_input_files
from radpilot.dicom.deid.table import Option, ProfileTable, load_table

__all__ = [
    "RISKY_SOP_CLASSES",
    "BurnedInAnnotationRefused",
    "DeidConfig",
    "DeidKey",
    "DeidReport",
    "Deidentifier",
    "Mapping",
    "MappingStore",
    "Option",
    "ProfileTable",
    "SafePrivate",
    "deidentify_files",
    "iter_input_files",
    "load_table",
    "write_new_key",
]
