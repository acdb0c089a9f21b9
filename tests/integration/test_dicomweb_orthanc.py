"""RadPilot's DICOMweb beside Orthanc's: the same instance in both answers the same way.

Orthanc (with its DICOMweb plugin) is the reference implementation here: what
dicomweb-client reads from Orthanc it must read, with the same values, from RadPilot.
"""

from __future__ import annotations

import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset

from tests.factories import make_ct_dataset, to_part10_bytes

pytestmark = pytest.mark.integration


def test_same_instance_reads_the_same_from_orthanc_and_radpilot(radpilot, orthanc) -> None:  # noqa: ANN001
    ds = make_ct_dataset(patient_id="CMP-ORTHANC", patient_name="COMPARE^ME")
    data = to_part10_bytes(ds)
    orthanc.upload(data)
    stored = radpilot.dicomweb_client().store_instances([ds])
    assert len(stored.ReferencedSOPSequence) == 1
    uids = (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)

    answers = {}
    for name, client in (("orthanc", DICOMwebClient(url=orthanc.dicomweb_url)), ("radpilot", radpilot.dicomweb_client())):
        (study,) = client.search_for_studies(search_filters={"StudyInstanceUID": ds.StudyInstanceUID})
        assert study["0020000D"]["Value"] == [ds.StudyInstanceUID], name
        assert study["00100020"]["Value"] == ["CMP-ORTHANC"], name
        (metadata,) = client.retrieve_series_metadata(ds.StudyInstanceUID, ds.SeriesInstanceUID)
        header = Dataset.from_json(metadata, bulk_data_uri_handler=lambda uri: b"")
        assert header.SOPInstanceUID == ds.SOPInstanceUID, name
        assert header.PatientName == "COMPARE^ME", name
        # Orthanc refuses dicomweb-client's default Accept (type="*/*"): name the media type.
        (frame,) = client.retrieve_instance_frames(
            *uids, frame_numbers=[1], media_types=(("application/octet-stream", "1.2.840.10008.1.2.1"),)
        )
        assert frame == ds.PixelData, name
        answers[name] = (study, metadata)

    (orthanc_study, orthanc_meta), (our_study, our_meta) = answers["orthanc"], answers["radpilot"]
    for key, value in orthanc_study.items():
        if key in ("00080005", "00081190"):  # SpecificCharacterSet; RetrieveURL differs by server
            continue
        assert our_study.get(key) == value, f"QIDO study attribute {key}"
    for key, value in orthanc_meta.items():
        assert key in our_meta, f"metadata attribute {key} missing"
        if "BulkDataURI" in value:
            assert "BulkDataURI" in our_meta[key], key
        else:
            assert our_meta[key] == value, f"metadata attribute {key}"
