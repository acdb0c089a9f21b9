"""The DICOM JSON model (PS3.18 Annex F) written by radpilot.dicom.json_model."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from radpilot.dicom.json_model import (
    DicomJsonError,
    attribute_json,
    dataset_to_json,
    instance_metadata_document,
    keyword_attribute,
    person_name_json,
    resolve_attribute,
    resolve_bulk_path,
)
from tests.factories import make_ct_dataset, to_part10_bytes


def uri(path: str) -> str:
    return f"http://x/bulk/{path}"


def test_person_names() -> None:
    ds = Dataset()
    ds.PatientName = "Yamada^Tarou=山田^太郎=やまだ^たろう"
    ds.ReferringPhysicianName = ["DOE^JOHN", "", "ROE^R"]
    ds.PerformingPhysicianName = ""
    result = dataset_to_json(ds)
    assert result["00100010"] == {
        "vr": "PN",
        "Value": [{"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎", "Phonetic": "やまだ^たろう"}],
    }
    assert result["00080090"]["Value"] == [{"Alphabetic": "DOE^JOHN"}, None, {"Alphabetic": "ROE^R"}]
    assert result["00081050"] == {"vr": "PN"}
    assert person_name_json("=IDEO") == {"Ideographic": "IDEO"}


def test_dates_strings_and_uid_lists() -> None:
    ds = Dataset()
    ds.StudyDate = "20240102"
    ds.StudyTime = "101500.123"
    ds.ImageType = ["ORIGINAL", "", "AXIAL"]
    ds.ReferencedSOPClassUIDInFile = "1.2.3"
    ds.add_new(0x00080002, "UI", ["1.2.3", "1.2.4"])  # multi-valued UI
    result = dataset_to_json(ds)
    assert result["00080020"] == {"vr": "DA", "Value": ["20240102"]}
    assert result["00080030"] == {"vr": "TM", "Value": ["101500.123"]}
    assert result["00080008"]["Value"] == ["ORIGINAL", None, "AXIAL"]
    assert result["00080002"] == {"vr": "UI", "Value": ["1.2.3", "1.2.4"]}


def test_numbers() -> None:
    ds = Dataset()
    ds.SeriesNumber = "12"
    ds.PixelSpacing = ["0.7", "1e-1"]
    ds.SliceThickness = "2"
    ds.Rows = 512
    ds.WindowCenter = ["40", "-600"]
    ds.RescaleSlope = "1.5"
    ds.add_new(0x00181030, "FD", [1.25, 2.0])  # not a real FD attribute: only the VR matters here
    result = dataset_to_json(ds)
    assert result["00200011"] == {"vr": "IS", "Value": [12]}
    assert result["00280030"] == {"vr": "DS", "Value": [0.7, 0.1]}
    assert result["00180050"] == {"vr": "DS", "Value": [2]}
    assert result["00280010"] == {"vr": "US", "Value": [512]}
    assert result["00281050"]["Value"] == [40, -600]
    assert result["00281053"]["Value"] == [1.5]
    assert result["00181030"]["Value"] == [1.25, 2.0]
    json.dumps(result, allow_nan=False)


def test_unparseable_and_non_finite_numbers_become_null() -> None:
    assert attribute_json("DS", ["1.5", "abc", "nan", "inf"]) == {"vr": "DS", "Value": [1.5, None, None, None]}
    assert attribute_json("IS", "") == {"vr": "IS"}
    assert attribute_json("IS", None) == {"vr": "IS"}


def test_attribute_tags() -> None:
    assert attribute_json("AT", [0x00100020, 0x7FE00010]) == {"vr": "AT", "Value": ["00100020", "7FE00010"]}


def test_sequences_nested_and_empty() -> None:
    item = Dataset()
    item.ReferencedSOPInstanceUID = "1.2.3"
    inner = Dataset()
    inner.CodeValue = "T-D3000"
    item.ConceptNameCodeSequence = Sequence([inner])
    ds = Dataset()
    ds.ReferencedImageSequence = Sequence([item, Dataset()])
    ds.OtherPatientIDsSequence = Sequence([])
    result = dataset_to_json(ds)
    items = result["00081140"]["Value"]
    assert items[0]["00081155"] == {"vr": "UI", "Value": ["1.2.3"]}
    assert items[0]["0040A043"]["Value"][0]["00080100"] == {"vr": "SH", "Value": ["T-D3000"]}
    assert items[1] == {}
    assert result["00101002"] == {"vr": "SQ"}


def test_binary_values_inline_or_bulk() -> None:
    ds = Dataset()
    ds.add_new(0x00091010, "OB", b"\x01\x02\x03")  # small private binary
    ds.add_new(0x00282000, "OB", b"\x00" * 2000)  # ICC profile above the threshold
    item = Dataset()
    item.add_new(0x00660016, "OF", b"\x00" * 4096)  # nested large binary
    ds.add_new(0x00660002, "SQ", Sequence([item]))
    ds.add_new(0x7FE00010, "OW", b"\x00\x01" * 8)  # pixel data is always bulk, however small
    result = dataset_to_json(ds, bulk_data_uri=uri)
    assert result["00091010"] == {"vr": "OB", "InlineBinary": base64.b64encode(b"\x01\x02\x03").decode()}
    assert result["00282000"] == {"vr": "OB", "BulkDataURI": "http://x/bulk/00282000"}
    assert result["00660002"]["Value"][0]["00660016"] == {
        "vr": "OF",
        "BulkDataURI": "http://x/bulk/00660002/0/00660016",
    }
    assert result["7FE00010"] == {"vr": "OW", "BulkDataURI": "http://x/bulk/7FE00010"}
    inline = dataset_to_json(ds)
    assert base64.b64decode(inline["00282000"]["InlineBinary"]) == b"\x00" * 2000


def test_big_endian_inline_binary_is_sent_little_endian() -> None:
    ds = Dataset()
    ds.add_new(0x00091010, "OW", b"\x01\x02\x03\x04")
    result = dataset_to_json(ds, little_endian=False)
    assert base64.b64decode(result["00091010"]["InlineBinary"]) == b"\x02\x01\x04\x03"


def test_deferred_values_are_not_read(tmp_path: Path) -> None:
    path = tmp_path / "ct.dcm"
    path.write_bytes(to_part10_bytes(make_ct_dataset(rows=64, columns=64)))
    ds = pydicom.dcmread(path, defer_size=1024)
    result = dataset_to_json(ds, bulk_data_uri=uri)
    assert result["7FE00010"] == {"vr": "OW", "BulkDataURI": "http://x/bulk/7FE00010"}
    raw = ds.get_item(0x7FE00010, keep_deferred=True)
    assert isinstance(raw, RawDataElement) and raw.value is None, "pixel data must stay unread"
    assert "00020010" not in result, "file meta information is not part of the metadata"


def test_pydicom_reads_the_json_back() -> None:
    ds = make_ct_dataset()
    del ds.PixelData
    back = Dataset.from_json(json.dumps(dataset_to_json(ds)))
    for keyword in ("PatientName", "StudyInstanceUID", "PixelSpacing", "ImagePositionPatient", "Rows", "SeriesNumber"):
        assert back[keyword].value == ds[keyword].value, keyword


def test_implicit_vr_file_with_ambiguous_vrs() -> None:
    ds = pydicom.dcmread(get_testdata_file("MR_small_implicit.dcm"), defer_size=1024)
    result = dataset_to_json(ds, bulk_data_uri=uri)
    # SmallestImagePixelValue is "US or SS" in the dictionary; this MR's PixelRepresentation is 1 (signed).
    assert ds.PixelRepresentation == 1
    assert result["00280106"]["vr"] == "SS"
    assert result["00280107"]["vr"] == "SS"
    assert result["7FE00010"]["vr"] in ("OB", "OW")
    json.dumps(result, allow_nan=False)


def test_resolve_attribute() -> None:
    assert resolve_attribute("PatientID") == (0x00100020, "PatientID")
    assert resolve_attribute("0020000d") == (0x0020000D, "StudyInstanceUID")
    assert resolve_attribute("00091010") == (0x00091010, "")
    assert keyword_attribute("PatientID", "P1") == ("00100020", {"vr": "LO", "Value": ["P1"]})
    with pytest.raises(DicomJsonError, match="neither a DICOM attribute keyword"):
        resolve_attribute("NoSuchKeyword")


def test_resolve_bulk_path() -> None:
    item = Dataset()
    item.add_new(0x00660016, "OF", b"\x00" * 8)
    ds = Dataset()
    ds.add_new(0x00660002, "SQ", Sequence([item]))
    ds.PatientID = "P"
    assert resolve_bulk_path(ds, "00660002/0/00660016").value == b"\x00" * 8
    for path, fragment in [
        ("", "must be TAG"),
        ("00660002/0", "must be TAG"),
        ("XYZ", "not a tag"),
        ("7FE00010", "no element 7FE00010"),
        ("00660002/1/00660016", "has 1 item"),
        ("00660002/a/00660016", "not a number"),
        ("00100020/0/00660016", "not a sequence"),
    ]:
        with pytest.raises(DicomJsonError, match=fragment):
            resolve_bulk_path(ds, path)


@pytest.mark.parametrize(("width", "kept"), [(0, False), (-5, False), (400, True)])
def test_metadata_leaves_out_a_window_narrower_than_one(width: float, kept: bool) -> None:
    # 3D-IRCADb's CT carries WindowWidth 0, which PS3.3 forbids and OHIF draws inverted.
    ds = make_ct_dataset()
    ds.WindowCenter, ds.WindowWidth = 40, width
    document = json.loads(instance_metadata_document(ds, str(ds.file_meta.TransferSyntaxUID)))
    assert ("00281051" in document) is kept and ("00281050" in document) is kept
    assert ds.WindowWidth == width  # the dataset (and the stored file) keep their values
