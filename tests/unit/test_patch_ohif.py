"""scripts/patch_ohif.py: the pinned OHIF build's VOI LUT Function and Presentation LUT Shape defects are mended
in place, under a new content-hashed bundle name written into every file that named the old one; running it
again changes nothing. (That the mended viewer draws such images: tests/integration/test_chest_xray_ohif.py.)"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
from pathlib import Path
from types import ModuleType

import pytest

from tests.helpers import require_or_skip

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "patch_ohif.py"
DEFECTIVE = """            windowWidth: voiLutModule.windowWidth
                    ? voiLutModule.windowWidth[0]
                    : undefined,
                voiLUTFunction: (voiLutModule.voiLUTFunction?.length &&
                    voiLutModule.voiLUTFunction[0]) ||
                    voiLutModule.voiLutFunction ||
                    undefined,
"""
# OHIF's own metadata provider, the pixel module it answers for an instance.
DEFECTIVE_PIXEL_MODULE = """      case WADO_IMAGE_LOADER_TAGS.IMAGE_PIXEL_MODULE:
        metadata = {
          samplesPerPixel: (0,toNumber/* ["default"] */.A)(instance.SamplesPerPixel),
          photometricInterpretation: instance.PhotometricInterpretation,
          rows: (0,toNumber/* ["default"] */.A)(instance.Rows),
"""
OLD_NAME = "app.bundle.0f6159c501addfe9.js"


@pytest.fixture
def patch_ohif() -> ModuleType:
    spec = importlib.util.spec_from_file_location("patch_ohif", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _dist(folder: Path, bundle_text: str) -> Path:
    folder.mkdir()
    (folder / OLD_NAME).write_text(bundle_text)
    (folder / "index.html").write_text(f'<script defer src="/{OLD_NAME}"></script>')
    (folder / "sw.js").write_text(f'precache([{{"url":"{OLD_NAME}","revision":null}}])')
    (folder / "89.bundle.b327bf3664812958.js").write_text("other chunk")
    return folder


def test_the_defect_is_mended_under_a_new_name_that_index_and_service_worker_load(patch_ohif: ModuleType, tmp_path: Path) -> None:
    dist = _dist(tmp_path / "dist", "head\n" + DEFECTIVE + DEFECTIVE_PIXEL_MODULE + "tail\n")
    assert patch_ohif.main(["patch_ohif.py", str(dist)]) == 0
    (bundle,) = [p for p in dist.glob("app.bundle.*.js")]
    assert bundle.name != OLD_NAME and not (dist / OLD_NAME).exists()
    text = bundle.read_text()
    assert "voiLUTFunction[0]" not in text and "photometricInterpretation: instance.PhotometricInterpretation," not in text
    assert all(mend.replacement in text for mend in patch_ohif.MENDS)
    assert text.startswith("head\n") and text.endswith("tail\n")
    assert f"/{bundle.name}" in (dist / "index.html").read_text()
    assert bundle.name in (dist / "sw.js").read_text()
    assert (dist / "89.bundle.b327bf3664812958.js").read_text() == "other chunk"


def test_running_it_again_changes_nothing(patch_ohif: ModuleType, tmp_path: Path) -> None:
    dist = _dist(tmp_path / "dist", DEFECTIVE + DEFECTIVE_PIXEL_MODULE)
    assert patch_ohif.main(["patch_ohif.py", str(dist)]) == 0
    before = {p.name: p.read_bytes() for p in dist.iterdir()}
    assert patch_ohif.main(["patch_ohif.py", str(dist)]) == 0
    assert {p.name: p.read_bytes() for p in dist.iterdir()} == before


def test_a_build_without_the_defects_is_reported_and_left_alone(patch_ohif: ModuleType, tmp_path: Path) -> None:
    dist = _dist(tmp_path / "dist", "voiLUTFunction: voiLutModule.voiLUTFunction,\n")
    before = {p.name: p.read_bytes() for p in dist.iterdir()}
    assert patch_ohif.main(["patch_ohif.py", str(dist)]) == 1
    assert {p.name: p.read_bytes() for p in dist.iterdir()} == before


def test_a_build_with_only_one_defect_is_mended_and_the_other_reported(
    patch_ohif: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dist = _dist(tmp_path / "dist", DEFECTIVE)
    assert patch_ohif.main(["patch_ohif.py", str(dist)]) == 1
    assert patch_ohif.VOI_LUT_FUNCTION.replacement in next(dist.glob("app.bundle.*.js")).read_text()
    assert "not found" in capsys.readouterr().err and patch_ohif.missing(dist) == [patch_ohif.PRESENTATION_LUT_SHAPE.name]


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        require_or_skip("node is not installed (Debian package nodejs, installed with npm by make setup)")
    return str(node)


def test_the_voi_mend_takes_a_string_whole_and_the_first_value_of_a_list(patch_ohif: ModuleType) -> None:
    node = _node()
    script = (
        f"const f = (voiLutModule) => {patch_ohif.VOI_LUT_FUNCTION.replacement};"
        "console.log(JSON.stringify([f({voiLUTFunction: 'LINEAR'}), f({voiLUTFunction: ['SIGMOID']}), f({}) ?? null]));"
    )
    result = subprocess.run([node, "-e", script], capture_output=True, text=True, check=True, timeout=30)
    assert json.loads(result.stdout) == ["LINEAR", "SIGMOID", None]


def test_the_polarity_mend_reports_monochrome2_with_inverse_as_one_inversion_and_leaves_the_rest(patch_ohif: ModuleType) -> None:
    mended = patch_ohif.PRESENTATION_LUT_SHAPE.replacement
    cases = [
        ({"PhotometricInterpretation": "MONOCHROME2", "PresentationLUTShape": "INVERSE"}, "MONOCHROME1"),
        ({"PhotometricInterpretation": "MONOCHROME2", "PresentationLUTShape": ["INVERSE"]}, "MONOCHROME1"),
        ({"PhotometricInterpretation": "MONOCHROME2", "PresentationLUTShape": "INVERSE "}, "MONOCHROME1"),
        ({"PhotometricInterpretation": "MONOCHROME2", "PresentationLUTShape": "IDENTITY"}, "MONOCHROME2"),
        ({"PhotometricInterpretation": "MONOCHROME2"}, "MONOCHROME2"),
        ({"PhotometricInterpretation": "MONOCHROME1", "PresentationLUTShape": "INVERSE"}, "MONOCHROME1"),
        ({"PhotometricInterpretation": "MONOCHROME1"}, "MONOCHROME1"),
        ({"PhotometricInterpretation": "RGB", "PresentationLUTShape": "INVERSE"}, "RGB"),
    ]
    script = (
        f"const f = (instance) => ({{{mended}}}).photometricInterpretation;"
        + f"console.log(JSON.stringify({json.dumps([c for c, _ in cases])}.map(f)));"
    )
    result = subprocess.run([_node(), "-e", script], capture_output=True, text=True, check=True, timeout=30)
    assert json.loads(result.stdout) == [expected for _, expected in cases]
