"""dciodvfy finds no error in the results of a radiograph whose segmentation was judged implausible (CTR withheld),
nor in those of a DX written as vendors write MONOCHROME1 (Presentation LUT Shape INVERSE, a Modality LUT Sequence)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from radpilot.analyses.chest_xray import ANALYSIS
from radpilot.engine.pipeline import encode_results
from tests.integration.test_encoders_dciodvfy import _verify
from tests.unit.test_chest_xray_analysis import NORMAL_CASE, jsrt_case, radiograph_dataset, run_analysis
from tests.unit.test_chest_xray_grayscale import _dx_mono1_inverse, _modality_lut_sequence, _written_and_read

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("case", ["implausible_cropped", "dx_mono1_inverse", "modality_lut_sequence"])
def test_results_pass_dciodvfy(case: str, tmp_path: Path) -> None:
    film = jsrt_case(NORMAL_CASE)
    build = {
        "implausible_cropped": lambda p: radiograph_dataset(np.ascontiguousarray(p[128:384, 128:384])),
        "dx_mono1_inverse": _dx_mono1_inverse,
        "modality_lut_sequence": _modality_lut_sequence,
    }[case]
    ds = _written_and_read(build(film.pixels))
    findings, volume = run_analysis(ds)
    flagged = any(q.value.value == "RP-SEGQ-IMPL" for q in findings.qualitative)
    assert flagged == (case == "implausible_cropped")
    for name, obj in zip(("seg", "sr", "key"), encode_results(ANALYSIS, findings, volume, [ds], uid_seed=f"cxr-{case}")):
        _verify(obj, tmp_path / f"{case}_{name}.dcm")
