"""De-identify DICOM datasets with the PS3.15 Annex E Basic Profile and its options.

Why not an existing library: pydicom's ``deid`` applies recipes written by hand (no
Table E.1-1 with its option columns, no encrypted way back), and ``dicognito`` applies
its own fixed policy with one-way randomised values (no profile options, no stored
mapping, no per-patient date shift on request). RadPilot needs the standard's table with
its edition, consistent pseudonyms across batches and an encrypted mapping, so it applies
the table itself; both libraries were read for their handling of UIDs and dates.

What one call does, in order: refuse (or mask, per configuration) images that may carry
burned-in text; apply each attribute's action from the table, recursing into every
sequence that is kept; remove private attributes unless on the safe list; then set
PatientIdentityRemoved, the De-identification Method (Code Sequence) with the CID 7050
codes of the profile and options used, and Longitudinal Temporal Information Modified.
"""

from __future__ import annotations

import base64
import copy
import datetime as _dt
import hashlib
import hmac
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from radpilot.dicom.deid.mapping import DeidKey, Mapping
from radpilot.dicom.deid.table import BASIC_PROFILE_CODE, CLEAN_PIXEL_DATA_CODE, OPTION_CODES, Option, ProfileTable, load_table

logger = logging.getLogger(__name__)

# Images that may carry burned-in text although they do not say so: secondary capture
# (which RadPilot's own key images are), ultrasound (single and multi-frame, enhanced).
RISKY_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.7": "Secondary Capture Image",
    "1.2.840.10008.5.1.4.1.1.7.1": "Multi-frame Single Bit Secondary Capture",
    "1.2.840.10008.5.1.4.1.1.7.2": "Multi-frame Grayscale Byte Secondary Capture",
    "1.2.840.10008.5.1.4.1.1.7.3": "Multi-frame Grayscale Word Secondary Capture",
    "1.2.840.10008.5.1.4.1.1.7.4": "Multi-frame True Color Secondary Capture",
    "1.2.840.10008.5.1.4.1.1.6.1": "Ultrasound Image",
    "1.2.840.10008.5.1.4.1.1.6.2": "Enhanced US Volume",
    "1.2.840.10008.5.1.4.1.1.3.1": "Ultrasound Multi-frame Image",
}

PATIENT_ID = 0x00100020
PATIENT_NAME = 0x00100010
TEXT_VRS = {"LO", "SH", "ST", "LT", "UT", "UC", "PN", "CS", "AE"}
NUMBER_VRS = {"IS", "DS", "US", "SS", "UL", "SL", "FL", "FD", "UV", "SV", "AT"}
BINARY_VRS = {"OB", "OW", "OF", "OD", "OL", "OV", "UN"}
DUMMY_TEXT = "REMOVED"
DUMMY_DATE = "19000101"
# Days subtracted from a patient's dates with the Modified Dates option: 1..3650, from the key.
MAX_SHIFT_DAYS = 3650


class BurnedInAnnotationRefused(ValueError):
    """An image that may show burned-in text was refused; the message says why and how to allow masking."""


@dataclass(frozen=True)
class SafePrivate:
    """One private attribute known to carry no identity: its group, private creator and element (low byte)."""

    group: int
    creator: str
    element: int


@dataclass(frozen=True)
class DeidConfig:
    """The profile's options and the policies for burned-in text and private attributes."""

    options: frozenset[Option] = frozenset()
    burned_in: Literal["refuse", "mask"] = "refuse"
    mask_regions: tuple[tuple[int, int, int, int], ...] = ()  # (first row, first column, last row, last column), inclusive
    safe_private: tuple[SafePrivate, ...] = ()

    def __post_init__(self) -> None:
        if self.burned_in not in ("refuse", "mask"):
            raise ValueError(f"burned-in policy must be 'refuse' or 'mask', not {self.burned_in!r}")
        if self.burned_in == "mask" and not self.mask_regions:
            raise ValueError("the 'mask' burned-in policy needs at least one region to mask (row0,col0,row1,col1)")
        if Option.RETAIN_LONGITUDINAL_FULL_DATES in self.options and Option.RETAIN_LONGITUDINAL_MODIFIED_DATES in self.options:
            raise ValueError("choose either full dates or modified (shifted) dates, not both")
        if self.safe_private and Option.RETAIN_SAFE_PRIVATE not in self.options:
            raise ValueError("a safe private list is given but the Retain Safe Private option is not selected")


@dataclass
class _Patient:
    pseudo_id: str
    shift_days: int


@dataclass
class Deidentifier:
    """Applies one configuration with one key to any number of datasets, consistently."""

    key: DeidKey
    config: DeidConfig = field(default_factory=DeidConfig)
    table: ProfileTable = field(default_factory=load_table)
    mapping: Mapping = field(default_factory=Mapping)
    _seen: set[int] = field(default_factory=set, init=False, repr=False)

    # -- pseudonyms -------------------------------------------------------------------------
    def _digest(self, kind: str, value: str) -> bytes:
        return hmac.new(self.key.hmac_key, f"{kind}\x00{value}".encode(), hashlib.sha256).digest()

    def new_uid(self, uid: str) -> str:
        """The same new UID for the same original UID under the same key (2.25 form, PS3.5 B.2)."""
        uid = uid.strip().rstrip("\x00")
        if not uid:
            return uid
        new = "2.25." + str(int.from_bytes(self._digest("uid", uid)[:16], "big"))
        self.mapping.uids[new] = uid
        return new

    def _patient(self, ds: Dataset) -> _Patient:
        original_id = str(ds.get("PatientID", "") or "")
        issuer = str(ds.get("IssuerOfPatientID", "") or "")
        name = str(ds.get("PatientName", "") or "")
        birth = str(ds.get("PatientBirthDate", "") or "")
        identity = f"{issuer}|{original_id}" if original_id else f"name|{name}|{birth}"
        digest = self._digest("patient", identity)
        pseudo = "RP" + base64.b32encode(digest[:10]).decode("ascii")[:14]
        shift = int.from_bytes(self._digest("shift", identity)[:4], "big") % MAX_SHIFT_DAYS + 1
        self.mapping.patients[pseudo] = {
            "PatientID": original_id,
            "IssuerOfPatientID": issuer,
            "PatientName": name,
            "date_shift_days": -shift,
        }
        return _Patient(pseudo, shift)

    def person_pseudonym(self, name: str) -> str:
        """A member of staff (a reviewer named in exported labels): the same pseudonym for the same name under the same key."""
        name = name.strip()
        if not name:
            return ""
        pseudo = "RV" + base64.b32encode(self._digest("person", name)[:10]).decode("ascii")[:14]
        self.mapping.persons[pseudo] = name
        return pseudo

    def patient_pseudonym(self, ds: Dataset) -> str:
        """The pseudonym the instances of ``ds``'s patient get."""
        return self._patient(ds).pseudo_id

    def export_datetime(self, when: _dt.datetime | None, ds: Dataset) -> str | None:
        """A time about ``ds``'s patient as the profile's options allow: shifted like the patient's dates, kept, or dropped (None).

        With the Modified Dates option it moves back by the patient's own shift, so intervals between it and the
        images' dates are kept; with Full Dates it is kept; otherwise no date may leave, so it is dropped.
        """
        if when is None:
            return None
        options = self.config.options
        if Option.RETAIN_LONGITUDINAL_MODIFIED_DATES in options:
            return (when - _dt.timedelta(days=self._patient(ds).shift_days)).isoformat()
        if Option.RETAIN_LONGITUDINAL_FULL_DATES in options:
            return when.isoformat()
        return None

    def clean_free_text(self, text: str, ds: Dataset) -> str:
        """Free text written about ``ds``'s patient (a review reason) without the patient's identifiers, long numbers or dates."""
        return str(_clean_text(text, _identifiers(ds)))

    # -- the public call --------------------------------------------------------------------
    def deidentify(self, source: Dataset) -> Dataset:
        """A de-identified copy of ``source``; raises BurnedInAnnotationRefused for an image that may show text."""
        ds = copy.deepcopy(source)
        masked = self._burned_in(ds)
        patient = self._patient(ds)
        identifiers = _identifiers(ds)
        self._seen = set()
        self._apply(ds, patient, identifiers)
        ds.PatientID = patient.pseudo_id
        ds.PatientName = patient.pseudo_id
        self._mark(ds, masked)
        if getattr(ds, "file_meta", None) is not None:
            meta = ds.file_meta
            if "SOPInstanceUID" in ds:
                meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            for keyword in ("SourceApplicationEntityTitle", "SendingApplicationEntityTitle", "ReceivingApplicationEntityTitle"):
                if keyword in meta:
                    delattr(meta, keyword)
        return ds

    # -- burned-in text ---------------------------------------------------------------------
    def _burned_in(self, ds: Dataset) -> bool:
        flagged = str(ds.get("BurnedInAnnotation", "")).strip().upper() == "YES"
        sop_class = str(ds.get("SOPClassUID", ""))
        risky = RISKY_SOP_CLASSES.get(sop_class)
        if not flagged and risky is None:
            return False
        if "PixelData" not in ds:
            return False
        reasons = (["BurnedInAnnotation is YES"] if flagged else []) + (
            [f"its SOP class ({risky}) often carries burned-in text"] if risky else []
        )
        reason = " and ".join(reasons)
        if self.config.burned_in == "refuse":
            raise BurnedInAnnotationRefused(
                f"instance {ds.get('SOPInstanceUID', '?')} refused: {reason}; "
                "give the 'mask' policy with the text regions to mask to de-identify it"
            )
        _mask_pixels(ds, self.config.mask_regions)
        ds.BurnedInAnnotation = "NO"
        logger.warning("burned-in text masked", extra={"reason": reason, "regions": list(self.config.mask_regions)})
        return True

    # -- the table --------------------------------------------------------------------------
    def _apply(self, ds: Dataset, patient: _Patient, identifiers: list[str]) -> None:
        # An object built in memory (highdicom's SEG) may hold one item in two sequences;
        # it must be de-identified once, or its UIDs would be remapped twice.
        if id(ds) in self._seen:
            return
        self._seen.add(id(ds))
        options = self.config.options
        kept_private = self._kept_private(ds)
        for element in list(ds):
            tag = int(element.tag)
            if element.tag.is_private:
                if tag not in kept_private:
                    del ds[element.tag]
                continue
            rule = self.table.rule_for(tag)
            action = rule.action(options) if rule is not None else "K"
            self._act(ds, element, action, patient, identifiers)

    def _act(self, ds: Dataset, element: DataElement, action: str, patient: _Patient, identifiers: list[str]) -> None:
        vr = element.VR
        if action == "X":
            del ds[element.tag]
            return
        if vr == "SQ":
            if action == "Z":
                element.value = Sequence()
                return
            # K, C, D and U keep the sequence and de-identify its items with the same table:
            # the items' own attributes (person names, dates, UIDs, text) get their own actions.
            for item in element.value:
                self._apply(item, patient, identifiers)
            return
        if action == "K" or element.value is None or element.value == "":
            return
        if action == "Z":
            element.value = b"" if vr in BINARY_VRS else None
            return
        if action == "U":
            element.value = self._remap(element.value)
            return
        if action == "D":
            element.value = self._dummy(element, patient)
            return
        if action == "C":
            self._clean(ds, element, patient, identifiers)
            return
        raise ValueError(f"unknown action {action!r} for {element.tag}")

    def _remap(self, value: Any) -> Any:
        if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
            return [self.new_uid(str(v)) for v in value]
        return self.new_uid(str(value))

    def _dummy(self, element: DataElement, patient: _Patient) -> Any:
        vr = element.VR
        tag = int(element.tag)
        if tag in (PATIENT_ID, PATIENT_NAME):
            return patient.pseudo_id
        if vr == "UI":
            return self._remap(element.value)
        if vr == "DA":
            return DUMMY_DATE
        if vr == "TM":
            return "000000"
        if vr == "DT":
            return DUMMY_DATE + "000000"
        if vr == "AS":
            return "000Y"
        if vr in NUMBER_VRS:
            return 0 if vr not in ("DS", "IS") else "0"
        if vr in BINARY_VRS:
            return b"\x00\x00"
        if vr == "PN":
            return "ANONYMOUS"
        if vr == "CS":
            return "REMOVED"
        return DUMMY_TEXT

    def _clean(self, ds: Dataset, element: DataElement, patient: _Patient, identifiers: list[str]) -> None:
        vr = element.VR
        if vr in ("DA", "DT"):
            if Option.RETAIN_LONGITUDINAL_MODIFIED_DATES in self.config.options:
                element.value = _shift_value(element.value, patient.shift_days, vr)
            else:
                element.value = self._dummy(element, patient)
            return
        if vr == "TM" or vr in NUMBER_VRS or vr == "AS":
            return  # a time of day, a number or an age identifies no one once the dates are shifted
        if vr in TEXT_VRS:
            element.value = _clean_text(element.value, identifiers)
            return
        # Overlay and curve bitmaps (Clean Graphics) cannot be checked for text: removed.
        del ds[element.tag]

    def _kept_private(self, ds: Dataset) -> set[int]:
        if Option.RETAIN_SAFE_PRIVATE not in self.config.options or not self.config.safe_private:
            return set()
        safe = {(s.group, s.creator.strip(), s.element) for s in self.config.safe_private}
        kept: set[int] = set()
        for element in ds:
            if not element.tag.is_private or element.tag.element < 0x1000:
                continue
            group, block = element.tag.group, element.tag.element >> 8
            creator_tag = (group << 16) | block
            creator = ds.get(creator_tag)
            if creator is None:
                continue
            if (group, str(creator.value).strip(), element.tag.element & 0xFF) in safe:
                kept.update((int(element.tag), creator_tag))
        return kept

    # -- the marks of de-identification ----------------------------------------------------
    def _mark(self, ds: Dataset, masked: bool) -> None:
        options = self.config.options
        ds.PatientIdentityRemoved = "YES"
        codes = [BASIC_PROFILE_CODE]
        if masked:
            codes.append(CLEAN_PIXEL_DATA_CODE)
        codes += [OPTION_CODES[o] for o in sorted(options, key=lambda o: OPTION_CODES[o][0]) if o in OPTION_CODES]
        items = []
        for value, meaning in codes:
            item = Dataset()
            item.CodeValue = value
            item.CodingSchemeDesignator = "DCM"
            item.CodeMeaning = meaning
            items.append(item)
        ds.DeidentificationMethodCodeSequence = Sequence(items)
        ds.DeidentificationMethod = [f"RadPilot PS3.15 E.1-1 {self.table.edition}"] + [meaning[:64] for _, meaning in codes]
        if Option.RETAIN_LONGITUDINAL_MODIFIED_DATES in options:
            ds.LongitudinalTemporalInformationModified = "MODIFIED"
        elif Option.RETAIN_LONGITUDINAL_FULL_DATES in options:
            ds.LongitudinalTemporalInformationModified = "UNMODIFIED"
        else:
            ds.LongitudinalTemporalInformationModified = "REMOVED"


def _identifiers(ds: Dataset) -> list[str]:
    """Values that must not survive in cleaned text: the patient's names, IDs, birth date, accession number."""
    found: list[str] = []
    for keyword in ("PatientID", "AccessionNumber", "PatientBirthDate", "OtherPatientIDs", "IssuerOfPatientID", "StudyID"):
        value = ds.get(keyword)
        if value:
            found.extend(str(v) for v in (value if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue" else [value]))
    name = str(ds.get("PatientName", "") or "")
    found.extend(part for part in re.split(r"[\^=\s,]+", name) if len(part) >= 2)
    return sorted({f for f in found if f.strip()}, key=len, reverse=True)


# Runs of five or more digits (record numbers, dates, phone numbers) and date-like forms.
_NUMBERS = re.compile(r"\d{5,}|\d{1,4}[./-]\d{1,2}[./-]\d{1,4}")


def _clean_text(value: Any, identifiers: Iterable[str]) -> Any:
    """Clean Descriptors: keep the words, remove the patient's own identifiers and long numbers or dates."""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return [_clean_text(v, identifiers) for v in value]
    text = str(value)
    for ident in identifiers:
        text = re.sub(re.escape(ident), "", text, flags=re.IGNORECASE)
    text = _NUMBERS.sub("", text)
    return re.sub(r"\s{2,}", " ", text).strip()


def _shift_value(value: Any, days: int, vr: str) -> Any:
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return [_shift_value(v, days, vr) for v in value]
    text = str(value)
    if len(text) < 8 or not text[:8].isdigit():
        return DUMMY_DATE if vr == "DA" else DUMMY_DATE + "000000"
    try:
        shifted = _dt.datetime.strptime(text[:8], "%Y%m%d").date() - _dt.timedelta(days=days)
    except ValueError:
        return DUMMY_DATE if vr == "DA" else DUMMY_DATE + "000000"
    return shifted.strftime("%Y%m%d") + text[8:]


def _mask_pixels(ds: Dataset, regions: Iterable[tuple[int, int, int, int]]) -> None:
    """Set the pixels of each region (every frame, every sample) to the image's minimum; pixel data ends uncompressed."""
    if (
        ds.file_meta.TransferSyntaxUID.is_compressed
        if getattr(ds, "file_meta", None) is not None and "TransferSyntaxUID" in ds.file_meta
        else False
    ):
        ds.decompress()
    pixels = np.array(ds.pixel_array)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    rows, columns = int(ds.Rows), int(ds.Columns)
    view = pixels if frames > 1 else pixels[np.newaxis]
    floor = view.min()
    for r0, c0, r1, c1 in regions:
        if not (0 <= r0 <= r1 < rows and 0 <= c0 <= c1 < columns):
            raise ValueError(f"mask region {(r0, c0, r1, c1)} lies outside the {rows}x{columns} image")
        view[:, r0 : r1 + 1, c0 : c1 + 1, ...] = floor
    ds.PixelData = pixels.tobytes()
