"""Every de-identified output (real CT, X-ray, MR, RadPilot's SEG and SR, a masked key image) is accepted by Orthanc.

Accepted means stored as a new instance (Orthanc's ``Status`` "Success"), findable by its
new SOP Instance UID, with the pseudonym as PatientID; the SEG's referenced images are in
Orthanc under their new UIDs too.
"""

from __future__ import annotations

import pydicom
import pytest

from radpilot.dicom.deid import DeidConfig, Deidentifier, DeidKey, Option
from radpilot.dicom.encoders import encode_key_image, encode_measurement_report, encode_segmentation
from tests.deid_support import fill_every_table_attribute, real_ct_files, real_mr, real_xray
from tests.fixtures.orthanc import OrthancPeer
from tests.unit.test_encoders import build_ct_case

pytestmark = pytest.mark.integration


def test_orthanc_accepts_every_deidentified_output(clean_orthanc: OrthancPeer) -> None:
    case = build_ct_case()
    seg = encode_segmentation(case.findings, case.sources, series_number=900)
    sr = encode_measurement_report(case.findings, case.sources, seg, series_number=901)
    key_image = encode_key_image(case.findings, case.volume, case.sources, series_number=902)
    real = [pydicom.dcmread(p) for p in real_ct_files(4)] + [fill_every_table_attribute(real_xray()), fill_every_table_attribute(real_mr())]
    deid = Deidentifier(
        DeidKey.generate(),
        DeidConfig(options=frozenset({Option.RETAIN_LONGITUDINAL_MODIFIED_DATES}), burned_in="mask", mask_regions=((0, 0, 15, 15),)),
    )
    outputs = [deid.deidentify(ds) for ds in [*real, *case.sources, seg, sr, key_image]]
    for output in outputs:
        answer = clean_orthanc.upload(output)
        assert answer["Status"] == "Success", (output.SOPClassUID, answer)
        instance = clean_orthanc.rest_get(f"/instances/{answer['ID']}/simplified-tags")
        assert instance["SOPInstanceUID"] == output.SOPInstanceUID
        assert instance["PatientID"] == output.PatientID and instance["PatientIdentityRemoved"] == "YES"
    assert clean_orthanc.instance_count() == len(outputs)
    new_seg = outputs[-3]
    for series in new_seg.ReferencedSeriesSequence:
        for ref in series.ReferencedInstanceSequence:
            assert clean_orthanc.lookup(ref.ReferencedSOPInstanceUID), "a SEG reference does not resolve in Orthanc"
