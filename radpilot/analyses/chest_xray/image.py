"""From a radiograph's stored pixels to the image the models see: display convention, standard orientation.

A CR or DX image arrives as a :class:`~radpilot.dicom.volume.Volume` of one slice whose
voxels are modality values (RescaleSlope/Intercept applied by
:func:`~radpilot.dicom.volume.volume_from_datasets`, compressed pixel data decoded by
pydicom) and whose ``metadata`` carries the header fields used here.  :func:`display_image`
turns it into what a viewer would show and what the models were trained on:

1. **VOI transformation** (PS3.3 C.11.2), on the modality values, when the header has one:
   the first VOI LUT of the VOI LUT Sequence, else the first Window Center / Window Width
   with VOI LUT Function LINEAR (default), LINEAR_EXACT or SIGMOID.  The result is scaled
   to 0..1.  Without a VOI the modality values are kept as they are (the models normalise
   every image by its own 1st/99th percentiles, so any linear scaling is irrelevant).
2. **Polarity** (:func:`radpilot.dicom.grayscale.is_inverted`): MONOCHROME1 (minimum value
   shown white) is inverted, and so is an image whose Presentation LUT Shape is INVERSE; the
   two together, as the DX Image Module requires them, are ONE inversion. The result is the
   MONOCHROME2 display convention of the models: bone, heart and diaphragm bright, lungs dark.
3. **DX For Processing** images (raw detector data) are accepted only when they can be
   shown: with a VOI (window or LUT), or with Pixel Intensity Relationship LOG (values
   already logarithmic in the X-ray intensity).  Linear raw data without a window is refused
   by :func:`check_displayable`: its look depends on processing this analysis does not know.
4. **Standard orientation** (:func:`orientation_flips`): chest radiographs are displayed with
   the patient's right on the image left and the head up (Patient Orientation ``L\\F``, row
   direction towards the patient's left, column direction towards the feet).  An image whose
   Patient Orientation says otherwise (``R`` for the rows, ``H`` for the columns) is flipped
   to that orientation before the models see it, and the results are flipped back, so masks
   and points always lie on the source image's own grid.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from radpilot.dicom.grayscale import apply_voi, has_voi, is_inverted
from radpilot.dicom.volume import Volume

#: SOP Class UIDs of the projection radiographs this analysis reads.
CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"
DX_FOR_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.1.1"
RADIOGRAPH_SOP_CLASSES = {
    CR_IMAGE_STORAGE: "CR Image",
    DX_FOR_PRESENTATION: "Digital X-Ray Image (for presentation)",
    DX_FOR_PROCESSING: "Digital X-Ray Image (for processing)",
}


class NotDisplayableError(ValueError):
    """The stored values cannot be turned into a radiograph as a viewer would show it."""


@dataclass(frozen=True)
class DisplayImage:
    """A radiograph ready for the models.

    Attributes
    ----------
    pixels
        2-D float64 image in the MONOCHROME2 display convention, in **standard orientation**
        (see ``flip_rows``/``flip_columns``).
    flip_rows
        True when the source was upside down (its rows were reversed to get ``pixels``).
    flip_columns
        True when the source was mirrored (its columns were reversed to get ``pixels``).
    voi
        What VOI transformation was applied: ``"VOI LUT"``, ``"window LINEAR"``, ... or ``"none"``.
    inverted
        True when the stored values were inverted (MONOCHROME1 or an INVERSE Presentation LUT).
    """

    pixels: np.ndarray
    flip_rows: bool
    flip_columns: bool
    voi: str
    inverted: bool

    def to_source(self, array: np.ndarray) -> np.ndarray:
        """Map an array on the standard-orientation grid back to the source image's grid (flips are their own inverse)."""
        out = array
        if self.flip_rows:
            out = out[::-1, :]
        if self.flip_columns:
            out = out[:, ::-1]
        return np.ascontiguousarray(out)

    def point_to_source(self, row: float, col: float) -> tuple[float, float]:
        """Map a (row, column) pixel position from the standard-orientation grid to the source grid."""
        rows, cols = self.pixels.shape
        return (rows - 1 - row if self.flip_rows else row, cols - 1 - col if self.flip_columns else col)


def _upper(metadata: Mapping[str, Any], keyword: str) -> str:
    value = metadata.get(keyword)
    if isinstance(value, (list, tuple)):
        value = value[0] if value else ""
    return str(value or "").strip().upper()


def check_displayable(volume: Volume) -> None:
    """Raise :class:`NotDisplayableError` when the image cannot be shown as a radiograph (see the module text)."""
    metadata = volume.metadata
    photometric = _upper(metadata, "PhotometricInterpretation")
    if photometric and photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise NotDisplayableError(f"photometric interpretation {photometric} is not a grey-scale radiograph")
    if volume.sop_class_uid == DX_FOR_PROCESSING and not has_voi(metadata):
        relationship = _upper(metadata, "PixelIntensityRelationship")
        if relationship != "LOG":
            raise NotDisplayableError(
                "a DX 'for processing' image with raw detector values (Pixel Intensity Relationship "
                f"{relationship or 'not recorded'}) and no window or VOI LUT cannot be shown as a radiograph; "
                "send the 'for presentation' image"
            )


def orientation_flips(metadata: Mapping[str, Any]) -> tuple[bool, bool]:
    """(flip_rows, flip_columns) that bring the image to the standard chest orientation (patient right on the
    image left, head up), from Patient Orientation; (False, False) when it is absent or says nothing."""
    value = metadata.get("PatientOrientation")
    if isinstance(value, str):
        parts = value.split("\\")
    elif isinstance(value, (list, tuple)):
        parts = [str(v) for v in value]
    else:
        return False, False
    if len(parts) != 2:
        return False, False
    row_dir, col_dir = (p.strip().upper() for p in parts)
    # Row direction: where increasing column index points. Standard: towards the patient's left (L).
    flip_columns = row_dir.startswith("R")
    # Column direction: where increasing row index points. Standard: towards the feet (F).
    flip_rows = col_dir.startswith("H")
    return flip_rows, flip_columns


def display_image(volume: Volume) -> DisplayImage:
    """The radiograph of a one-slice ``volume`` in the display convention and standard orientation.

    Raises
    ------
    ValueError
        When the volume is not a single 2-D image.
    NotDisplayableError
        See :func:`check_displayable`.
    """
    if volume.num_slices != 1:
        raise ValueError(f"expected a single 2-D radiograph, got {volume.num_slices} slices")
    check_displayable(volume)
    metadata = volume.metadata
    values, voi = apply_voi(volume.voxels[0], metadata)
    inverted = is_inverted(metadata)
    if inverted:
        values = (1.0 if voi != "none" else float(values.max()) + float(values.min())) - values
    flip_rows, flip_columns = orientation_flips(metadata)
    if flip_rows:
        values = values[::-1, :]
    if flip_columns:
        values = values[:, ::-1]
    return DisplayImage(
        pixels=np.ascontiguousarray(values, dtype=np.float64),
        flip_rows=flip_rows,
        flip_columns=flip_columns,
        voi=voi,
        inverted=inverted,
    )
