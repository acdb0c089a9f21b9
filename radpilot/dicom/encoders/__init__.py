"""DICOM encoders for analysis findings, following IHE AI Results (AIR).

* :func:`encode_segmentation` - DICOM Segmentation (BINARY) of the label volume,
* :func:`encode_measurement_report` - Comprehensive 3D SR, TID 1500 Measurement Report,
* :func:`encode_key_image` - annotated Secondary Capture key image,
* :func:`encode_figure` - a picture the analysis drew itself (a chart, a montage) as a Secondary Capture.

Every object joins the study of its source series, opens its own series, copies
the patient and study attributes from the source, identifies RadPilot and the
algorithm (Manufacturer, Manufacturer's Model Name, Software Versions) and takes
deterministic UIDs from ``uid_seed`` (default: a hash of the analysis name,
version and source SOP Instance UIDs), so that re-running a job reproduces the
same Series and SOP Instance UIDs.  Each is checked with ``dciodvfy -new`` in
``tests/integration/test_encoders_dciodvfy.py``.
"""

from radpilot.dicom.encoders.common import (
    DEFAULT_MANUFACTURER,
    PRIVATE_CODING_SCHEME,
    SEGMENT_COLORS_RGB,
    DeviceIdentity,
    UidFactory,
    make_uid_seed,
    to_coded_concept,
    to_unit_concept,
)
from radpilot.dicom.encoders.key_image import KeyImage, default_display_window, encode_figure, encode_key_image, render_key_image
from radpilot.dicom.encoders.seg import encode_segmentation
from radpilot.dicom.encoders.sr import (
    DIAMETER_CONCEPT,
    SCORE_CONCEPT,
    default_procedure_code,
    encode_measurement_report,
)

__all__ = [
    "DEFAULT_MANUFACTURER",
    "DIAMETER_CONCEPT",
    "PRIVATE_CODING_SCHEME",
    "SCORE_CONCEPT",
    "SEGMENT_COLORS_RGB",
    "DeviceIdentity",
    "KeyImage",
    "UidFactory",
    "default_procedure_code",
    "default_display_window",
    "encode_figure",
    "encode_key_image",
    "encode_measurement_report",
    "encode_segmentation",
    "make_uid_seed",
    "render_key_image",
    "to_coded_concept",
    "to_unit_concept",
]
