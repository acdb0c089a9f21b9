"""C-FIND against RadPilot (Patient Root, Study Root, Patient/Study Only), pynetdicom as the peer."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, build_context
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    PatientStudyOnlyQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
)

from tests.factories import make_ct_dataset, to_part10_bytes

STUDY_ROOT = StudyRootQueryRetrieveInformationModelFind
PATIENT_ROOT = PatientRootQueryRetrieveInformationModelFind
PATIENT_STUDY_ONLY = PatientStudyOnlyQueryRetrieveInformationModelFind


@dataclass
class Content:
    """UIDs of what was stored: two CT series + one SR in study A, one MR study B, one CT study C."""

    study_a: str
    study_b: str
    study_c: str
    series_a_ct: str
    series_a_sr: str
    series_b_mr: str
    sop_a_ct: list[str]


def _store(archive, ds: Dataset) -> None:  # noqa: ANN001
    result = archive.store_file_bytes(to_part10_bytes(ds), source_ae_title="TEST")
    assert result.outcome.accepted, result.message


@pytest.fixture
def populated(radpilot) -> tuple:  # noqa: ANN001
    archive = radpilot.archive
    content = Content(
        study_a=generate_uid(),
        study_b=generate_uid(),
        study_c=generate_uid(),
        series_a_ct=generate_uid(),
        series_a_sr=generate_uid(),
        series_b_mr=generate_uid(),
        sop_a_ct=[],
    )
    for number in range(1, 4):
        ds = make_ct_dataset(
            study_uid=content.study_a,
            series_uid=content.series_a_ct,
            patient_id="PAT-A",
            patient_name="DOE^JANE",
            study_date="20200315",
            study_time="101500",
            accession="ACC-A",
            instance_number=number,
            seed=number,
        )
        content.sop_a_ct.append(ds.SOPInstanceUID)
        _store(archive, ds)
    _store(
        archive,
        make_ct_dataset(
            study_uid=content.study_a,
            series_uid=content.series_a_sr,
            patient_id="PAT-A",
            patient_name="DOE^JANE",
            study_date="20200315",
            modality="SR",
            series_number=2,
        ),
    )
    _store(
        archive,
        make_ct_dataset(
            study_uid=content.study_b,
            series_uid=content.series_b_mr,
            patient_id="PAT-B",
            patient_name="MÜLLER^ANNA",
            study_date="20210620",
            study_time="083000",
            accession="ACC-B",
            modality="MR",
        ),
    )
    _store(
        archive,
        make_ct_dataset(study_uid=content.study_c, patient_id="PAT-A", patient_name="DOE^JANE", study_date="20220101", accession="ACC-C"),
    )
    return radpilot, content


def c_find(node, identifier: Dataset, model: str = STUDY_ROOT) -> tuple[list[Dataset], Dataset]:  # noqa: ANN001
    """All pending identifiers and the final status of one C-FIND."""
    ae = AE(ae_title="FINDSCU")
    assoc = ae.associate("127.0.0.1", node.dicom_port, contexts=[build_context(model)], ae_title=node.ae_title)
    assert assoc.is_established
    matches, final = [], None
    try:
        for status, match in assoc.send_c_find(identifier, model):
            if status.Status in (0xFF00, 0xFF01):
                matches.append(match)
            else:
                final = status
    finally:
        assoc.release()
    assert final is not None
    return matches, final


def query(level: str, **keys: object) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ({"PatientName": "DOE*"}, {"study_a", "study_c"}),
        ({"PatientName": "doe"}, {"study_a", "study_c"}),
        ({"PatientID": "PAT-?"}, {"study_a", "study_b", "study_c"}),
        ({"StudyDate": "20200101-20201231"}, {"study_a"}),
        ({"StudyDate": "20210101-"}, {"study_b", "study_c"}),
        ({"StudyDate": "-20210620"}, {"study_a", "study_b"}),
        ({"AccessionNumber": "ACC-B"}, {"study_b"}),
        ({"ModalitiesInStudy": "MR"}, {"study_b"}),
        ({"ModalitiesInStudy": "SR\\MR"}, {"study_a", "study_b"}),
        ({"StudyInstanceUID": "<study_a>\\<study_c>"}, {"study_a", "study_c"}),
        ({"StudyTime": "0800-0900"}, {"study_b"}),
        ({"PatientName": ""}, {"study_a", "study_b", "study_c"}),
    ],
    ids=[
        "name-wildcard",
        "name-prefix-case-insensitive",
        "id-single-char-wildcard",
        "date-range",
        "date-open-end",
        "date-open-start",
        "accession",
        "modalities-in-study",
        "modalities-list",
        "uid-list",
        "time-range",
        "universal",
    ],
)
def test_study_level_matching(populated, keys: dict, expected: set[str]) -> None:  # noqa: ANN001
    node, content = populated
    uids = {name: getattr(content, name) for name in ("study_a", "study_b", "study_c")}
    resolved = {k: "\\".join(uids.get(part.strip("<>"), part) for part in str(v).split("\\")) for k, v in keys.items()}
    matches, final = c_find(node, query("STUDY", **{"StudyInstanceUID": "", **resolved}))

    assert final.Status == 0x0000
    found = {str(m.StudyInstanceUID) for m in matches}
    assert found == {uids[name] for name in expected}


def test_study_level_returns_exactly_the_requested_keys_with_computed_values(populated) -> None:  # noqa: ANN001
    node, content = populated
    identifier = query(
        "STUDY",
        StudyInstanceUID=content.study_a,
        PatientName="",
        StudyDate="",
        ModalitiesInStudy="",
        NumberOfStudyRelatedInstances="",
        NumberOfStudyRelatedSeries="",
        InstitutionName="",
    )
    (match,), _ = c_find(node, identifier)

    assert {e.keyword for e in match} == {
        "QueryRetrieveLevel",
        "StudyInstanceUID",
        "PatientName",
        "StudyDate",
        "ModalitiesInStudy",
        "NumberOfStudyRelatedInstances",
        "NumberOfStudyRelatedSeries",
        "InstitutionName",
    }
    assert match.QueryRetrieveLevel == "STUDY"
    assert str(match.PatientName) == "DOE^JANE"
    assert match.StudyDate == "20200315"
    assert list(match.ModalitiesInStudy) == ["CT", "SR"]
    assert int(match.NumberOfStudyRelatedInstances) == 4
    assert int(match.NumberOfStudyRelatedSeries) == 2
    assert match.InstitutionName in ("", None)  # not indexed: returned empty


def test_series_level_matches_within_a_study(populated) -> None:  # noqa: ANN001
    node, content = populated
    identifier = query("SERIES", StudyInstanceUID=content.study_a, SeriesInstanceUID="", Modality="CT", NumberOfSeriesRelatedInstances="")
    (match,), final = c_find(node, identifier)

    assert final.Status == 0x0000
    assert match.SeriesInstanceUID == content.series_a_ct
    assert int(match.NumberOfSeriesRelatedInstances) == 3


@pytest.mark.parametrize(
    ("keys", "count"),
    [({"InstanceNumber": "2"}, 1), ({"InstanceNumber": ""}, 3), ({"SOPInstanceUID": "<first>\\<last>"}, 2)],
    ids=["instance-number", "all", "uid-list"],
)
def test_image_level_matching(populated, keys: dict, count: int) -> None:  # noqa: ANN001
    node, content = populated
    values = {k: str(v).replace("<first>", content.sop_a_ct[0]).replace("<last>", content.sop_a_ct[-1]) for k, v in keys.items()}
    identifier = query(
        "IMAGE",
        **{
            "StudyInstanceUID": content.study_a,
            "SeriesInstanceUID": content.series_a_ct,
            "SOPInstanceUID": "",
            "SOPClassUID": "",
            **values,
        },
    )
    matches, final = c_find(node, identifier)

    assert final.Status == 0x0000
    assert len(matches) == count
    assert all(m.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2" for m in matches)


@pytest.mark.parametrize("model", [PATIENT_ROOT, PATIENT_STUDY_ONLY], ids=["patient-root", "patient-study-only"])
def test_patient_level_with_computed_counts(populated, model: str) -> None:  # noqa: ANN001
    node, _ = populated
    identifier = query("PATIENT", PatientID="PAT-A", PatientName="", NumberOfPatientRelatedStudies="", NumberOfPatientRelatedInstances="")
    (match,), final = c_find(node, identifier, model)

    assert final.Status == 0x0000
    assert str(match.PatientName) == "DOE^JANE"
    assert int(match.NumberOfPatientRelatedStudies) == 2
    assert int(match.NumberOfPatientRelatedInstances) == 5


def test_patient_root_study_level_under_a_patient(populated) -> None:  # noqa: ANN001
    node, content = populated
    matches, _ = c_find(node, query("STUDY", PatientID="PAT-B", StudyInstanceUID=""), PATIENT_ROOT)
    assert [m.StudyInstanceUID for m in matches] == [content.study_b]


def test_non_ascii_names_come_back_in_utf8(populated) -> None:  # noqa: ANN001
    node, content = populated
    (match,), _ = c_find(node, query("STUDY", StudyInstanceUID=content.study_b, PatientName=""))

    assert match.SpecificCharacterSet == "ISO_IR 192"
    assert str(match.PatientName) == "MÜLLER^ANNA"


@pytest.mark.filterwarnings("ignore:Invalid value for VR DA")
@pytest.mark.parametrize(
    ("model", "level", "keys", "expected_in_comment"),
    [
        (STUDY_ROOT, "PATIENT", {"PatientID": ""}, "PATIENT"),
        (STUDY_ROOT, "NONSENSE", {"PatientID": ""}, "NONSENSE"),
        (PATIENT_STUDY_ONLY, "SERIES", {"SeriesInstanceUID": ""}, "SERIES"),
        (STUDY_ROOT, "STUDY", {"StudyDate": "last week"}, "StudyDate"),
        (STUDY_ROOT, "STUDY", {"SeriesInstanceUID": "1.2.3"}, "SeriesInstanceUID"),
    ],
    ids=["patient-level-in-study-root", "unknown-level", "series-in-patient-study-only", "bad-date", "matching-below-level"],
)
def test_bad_query_fails_with_a_reason(populated, model: str, level: str, keys: dict, expected_in_comment: str) -> None:  # noqa: ANN001
    node, _ = populated
    matches, final = c_find(node, query(level, **keys), model)

    assert matches == []
    assert final.Status == 0xA900
    assert expected_in_comment in final.ErrorComment


def test_empty_key_below_the_level_is_returned_empty_not_refused(populated) -> None:  # noqa: ANN001
    node, content = populated
    (match,), final = c_find(node, query("STUDY", StudyInstanceUID=content.study_b, Modality=""))

    assert final.Status == 0x0000
    assert "Modality" in match and not match.Modality
