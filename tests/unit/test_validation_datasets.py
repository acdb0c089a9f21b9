"""Reference dataset manifests, the registry, content hashes, the layout adapters and the volume readers."""

from __future__ import annotations

import re
from pathlib import Path

import nibabel
import numpy as np
import pytest
import yaml

from radpilot.dicom.volume import Volume
from radpilot.validation.datasets import (
    ADAPTERS,
    SHIPPED_MANIFEST_DIR,
    DatasetError,
    DatasetRegistry,
    LabelImage,
    compute_content_hash,
    labels_on_volume_grid,
    load_manifest,
    parse_manifest,
    read_label_image,
    read_metaimage,
    read_nifti,
    volume_from_label_image,
)
from tests.unit.validation_support import (
    RADIOGRAPH_MANIFEST_OPTIONS,
    SLICE_MANIFEST_OPTIONS,
    SLICE_OFFSET,
    lps_affine_ijk,
    make_radiograph_dataset,
    make_slice_dataset,
    manifest_dict,
    phantom_hu,
    synthetic_slice,
    write_metaimage,
    write_nifti_labels,
)


def write_manifest(folder: Path, content: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{content['name']}.yaml"
    path.write_text(yaml.safe_dump(content, sort_keys=False))
    return path


# --------------------------------------------------------------------------------------------- manifests
def test_manifest_parses_and_round_trips(tmp_path: Path) -> None:
    content = manifest_dict("tiny", "png-slices", tmp_path, SLICE_MANIFEST_OPTIONS, development_use=["lung_ct_quant"])
    manifest = parse_manifest(content)
    assert manifest.name == "tiny" and manifest.layout == "png-slices" and manifest.reference_kind == "phantom"
    assert manifest.checks("lung_ct_quant") and not manifest.checks("chest_xray")
    assert manifest.development_use == ("lung_ct_quant",)
    again = parse_manifest(manifest.to_dict())
    assert again.to_dict() == manifest.to_dict()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"layout": "zip"}, "layout 'zip' is not one of"),
        ({"name": "Bad Name"}, "must be lower-case"),
        ({"content_hash": "md5:abc"}, "content_hash must be 'sha256:'"),
        ({"colour": "blue"}, "unknown field(s) ['colour']"),
        ({"reference": {"kind": "guess"}}, "reference.kind 'guess'"),
        ({"version": ""}, "missing required field(s) ['version']"),
    ],
)
def test_manifest_errors_say_what_is_wrong(tmp_path: Path, change: dict, message: str) -> None:
    content = manifest_dict("tiny", "png-slices", tmp_path, {}) | change
    with pytest.raises(DatasetError, match=re.escape(message)):
        parse_manifest(content, source=tmp_path / "tiny.yaml")


def test_shipped_manifests_describe_the_shared_sets() -> None:
    manifests = {p.stem: load_manifest(p) for p in SHIPPED_MANIFEST_DIR.glob("*.yaml")}
    assert set(manifests) >= {"ct-lung-slices", "ct-lung", "cxr-jsrt"}
    for name, m in manifests.items():
        assert m.name == name and m.content_hash and m.licence and m.citation and m.limitations, name
    assert manifests["ct-lung"].reference_kind == "automatic"  # README: NOT expert masks
    assert any("not calibrated" in x.lower() or "not calibrated hu" in x.lower() for x in manifests["ct-lung-slices"].limitations)
    assert manifests["ct-lung-slices"].options["exclude_from_statistics"]["column"] == "mask_qc"
    assert "cxr_lung_heart_seg" in manifests["cxr-jsrt"].development_use


def test_shipped_manifests_match_the_shared_data(shared_data_dir: Path) -> None:
    registry = DatasetRegistry(None, shared_root=shared_data_dir)
    for manifest in registry.manifests():
        verification = registry.verify(manifest)
        assert verification.ok, verification.to_dict()
    assert len(registry.cases(registry.get("ct-lung-slices"))) == 120
    assert len(registry.cases(registry.get("ct-lung"))) == 2
    assert len(registry.cases(registry.get("cxr-jsrt"))) == 199


# --------------------------------------------------------------------------------------------- content hash
def test_content_hash_notices_every_change(tmp_path: Path) -> None:
    root = tmp_path / "set"
    (root / "a").mkdir(parents=True)
    (root / "a" / "x.txt").write_text("one")
    (root / "y.txt").write_text("two")
    first = compute_content_hash(root)
    assert first.value.startswith("sha256:") and first.file_count == 2 and first.total_bytes == 6
    assert compute_content_hash(root).value == first.value  # deterministic
    (root / ".DS_Store").write_text("ignored")
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ignored")
    assert compute_content_hash(root).value == first.value  # hidden files and folders do not count
    (root / "y.txt").write_text("tw0")
    changed = compute_content_hash(root).value
    assert changed != first.value
    (root / "y.txt").write_text("two")
    (root / "y.txt").rename(root / "z.txt")
    assert compute_content_hash(root).value not in (first.value, changed)  # a rename changes it too


# --------------------------------------------------------------------------------------------- registry
def test_registry_verify_statuses(tmp_path: Path) -> None:
    root = make_slice_dataset(tmp_path / "slices", n=3)
    shipped = tmp_path / "shipped"
    digest = compute_content_hash(root)
    write_manifest(
        shipped,
        manifest_dict(
            "pinned",
            "png-slices",
            root,
            SLICE_MANIFEST_OPTIONS,
            content_hash=digest.value,
            file_count=digest.file_count,
            total_bytes=digest.total_bytes,
        ),
    )
    write_manifest(shipped, manifest_dict("unpinned", "png-slices", root, SLICE_MANIFEST_OPTIONS))
    write_manifest(shipped, manifest_dict("gone", "png-slices", tmp_path / "nowhere", SLICE_MANIFEST_OPTIONS))
    registry = DatasetRegistry(tmp_path / "data", shipped_dir=shipped)
    assert [m.name for m in registry.manifests()] == ["gone", "pinned", "unpinned"]
    assert registry.verify("pinned").status == "ok"
    assert registry.verify("pinned").n_cases == 3
    assert registry.verify("unpinned").status == "unpinned"
    assert registry.verify("gone").status == "missing"
    (root / "masks" / "ID_0001_Z_0011.png").write_bytes(b"changed")
    changed = registry.verify("pinned")
    assert changed.status == "changed" and "differs from the manifest" in changed.message
    with pytest.raises(KeyError, match="known datasets: gone, pinned, unpinned"):
        registry.get("other")


def test_user_dataset_is_registered_with_its_hash(tmp_path: Path) -> None:
    root = make_slice_dataset(tmp_path / "mine", n=2)
    shipped = tmp_path / "shipped"
    write_manifest(shipped, manifest_dict("shipped-one", "png-slices", root, SLICE_MANIFEST_OPTIONS))
    registry = DatasetRegistry(tmp_path / "data", shipped_dir=shipped)
    manifest = registry.add(
        root,
        name="my-slices",
        layout="png-slices",
        analysis="lung_ct_quant",
        options=SLICE_MANIFEST_OPTIONS,
        licence="hospital internal",
        limitations=["one scanner"],
    )
    assert manifest.origin == "user" and manifest.source == tmp_path / "data" / "validation" / "datasets" / "my-slices.yaml"
    assert manifest.content_hash == compute_content_hash(root).value
    assert registry.get("my-slices").origin == "user"
    assert registry.verify("my-slices").ok
    with pytest.raises(DatasetError, match="already registered"):
        registry.add(root, name="my-slices", layout="png-slices", options=SLICE_MANIFEST_OPTIONS)
    with pytest.raises(DatasetError, match="name of a shipped dataset"):
        registry.add(root, name="shipped-one", layout="png-slices", options=SLICE_MANIFEST_OPTIONS)
    with pytest.raises(DatasetError, match="no mask"):
        (tmp_path / "bad" / "images").mkdir(parents=True)
        (root / "images" / "ID_0000_Z_0010.png").replace(tmp_path / "bad" / "images" / "a.png")
        registry.add(tmp_path / "bad", name="bad", layout="png-slices")


# --------------------------------------------------------------------------------------------- adapters
def test_png_slices_adapter_reads_values_masks_and_qc(tmp_path: Path) -> None:
    root = make_slice_dataset(tmp_path / "s", n=3, defective=1)
    adapter = ADAPTERS["png-slices"]
    cases = adapter.cases(root, SLICE_MANIFEST_OPTIONS)
    assert [c.case_id for c in cases] == ["ID_0000_Z_0010", "ID_0001_Z_0011", "ID_0002_Z_0012"]  # the hold-out row is not listed
    assert cases[1].excluded and "mask_qc = FLAG_defect" in cases[1].excluded and cases[0].excluded is None
    data = adapter.load(root, cases[0], SLICE_MANIFEST_OPTIONS)
    image, mask = synthetic_slice(0)
    assert data.kind == "image2d" and data.pixel_spacing_mm is None
    np.testing.assert_array_equal(data.image, image)  # offset removed, values exact
    np.testing.assert_array_equal(data.reference_masks["lungs"], mask)


def test_png_slices_without_csv_pairs_by_name(tmp_path: Path) -> None:
    root = make_slice_dataset(tmp_path / "s", n=2)
    (root / "cases.csv").unlink()
    cases = ADAPTERS["png-slices"].cases(root, {"value_offset": SLICE_OFFSET})
    assert [c.case_id for c in cases] == ["ID_0000_Z_0010", "ID_0001_Z_0011"]
    data = ADAPTERS["png-slices"].load(root, cases[1], {"value_offset": SLICE_OFFSET, "structure": "lungs"})
    np.testing.assert_array_equal(data.image, synthetic_slice(1)[0])


def test_png_radiographs_adapter(tmp_path: Path) -> None:
    root = make_radiograph_dataset(tmp_path / "r", n=2)
    adapter = ADAPTERS["png-radiographs"]
    cases = adapter.cases(root, RADIOGRAPH_MANIFEST_OPTIONS)
    assert [c.case_id for c in cases] == ["CXR000", "CXR001"]
    assert 0.3 < cases[0].reference_values["ctr"] < 0.6
    data = adapter.load(root, cases[0], RADIOGRAPH_MANIFEST_OPTIONS)
    assert set(data.reference_masks) == {"right_lung", "left_lung", "heart"}
    assert data.pixel_spacing_mm == (1.4, 1.4)
    with pytest.raises(DatasetError, match="needs options.structures"):
        adapter.cases(root, {})


# --------------------------------------------------------------------------------------------- volume readers
def _phantom_volume(direction: np.ndarray | None = None, origin: tuple = (0.0, 0.0, 0.0)) -> Volume:
    hu, _ = phantom_hu()
    from tests.unit.validation_support import PHANTOM_SPACING

    return Volume(
        voxels=hu.astype(np.float32),
        spacing_zyx=PHANTOM_SPACING,
        origin=origin,
        direction=np.eye(3) if direction is None else direction,
        modality="CT",
    )


@pytest.mark.parametrize("flip_k", [False, True])
def test_nifti_reader_matches_nibabel_and_aligns(tmp_path: Path, flip_k: bool) -> None:
    _, labels = phantom_hu()
    path = tmp_path / "mask.nii.gz"
    write_nifti_labels(path, labels, flip_k=flip_k)
    image = read_nifti(path)
    reference = nibabel.load(str(path))
    np.testing.assert_array_equal(image.array, np.asarray(reference.dataobj))
    np.testing.assert_allclose(image.affine_lps, np.diag([-1, -1, 1, 1]) @ reference.affine, atol=1e-5)
    np.testing.assert_array_equal(labels_on_volume_grid(image, _phantom_volume()), labels)


def test_nifti_qform_only_and_uncompressed(tmp_path: Path) -> None:
    array = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    affine = np.array([[0, 0, 2.0, 5], [-1.5, 0, 0, 7], [0, 1.0, 0, -3], [0, 0, 0, 1]])
    image = nibabel.Nifti1Image(array, affine)
    image.set_sform(None, code=0)
    image.set_qform(affine, code=1)
    nibabel.save(image, str(tmp_path / "q.nii"))
    read = read_label_image(tmp_path / "q.nii")
    np.testing.assert_array_equal(read.array, array)
    np.testing.assert_allclose(read.affine_lps, np.diag([-1, -1, 1, 1]) @ nibabel.load(str(tmp_path / "q.nii")).get_qform(), atol=1e-5)


def test_nifti_without_sform_or_qform_uses_the_voxel_sizes_alone(tmp_path: Path) -> None:
    """NIfTI method 1 (as the cmr-acdc files are written): no offset, no flip; not nibabel's Analyze fallback."""
    array = np.arange(60, dtype=np.uint8).reshape(3, 4, 5)
    image = nibabel.Nifti1Image(array, np.diag([1.5, 1.25, 10.0, 1.0]))
    image.set_sform(None, code=0)
    image.set_qform(None, code=0)
    nibabel.save(image, str(tmp_path / "m1.nii.gz"))
    read = read_nifti(tmp_path / "m1.nii.gz")
    assert read.array.dtype == np.uint8 and read.array.flags.c_contiguous
    np.testing.assert_array_equal(read.array, array)
    np.testing.assert_array_equal(read.affine_lps, np.diag([-1.5, -1.25, 10.0, 1.0]))


def test_nifti_scaling_is_applied_in_float64_and_nifti2_is_read(tmp_path: Path) -> None:
    array = np.array([[[0, 1], [2, -3]], [[400, 5], [6, 7]]], dtype=np.int16)
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    scaled = nibabel.Nifti1Image(array, affine)
    scaled.header.set_slope_inter(2.5, -1024.0)
    nibabel.save(scaled, str(tmp_path / "scaled.nii.gz"))
    read = read_nifti(tmp_path / "scaled.nii.gz")
    assert read.array.dtype == np.float64
    np.testing.assert_array_equal(read.array, array * 2.5 - 1024.0)
    nibabel.save(nibabel.Nifti2Image(array, affine), str(tmp_path / "two.nii"))
    two = read_label_image(tmp_path / "two.nii")
    assert two.array.dtype == np.int16
    np.testing.assert_array_equal(two.array, array)
    np.testing.assert_array_equal(two.affine_lps, np.diag([-1, -1, 1, 1]) @ affine)


def test_nifti_errors_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "junk.nii").write_bytes(b"not a nifti file" * 40)
    with pytest.raises(DatasetError, match=r"junk\.nii: cannot read NIfTI file"):
        read_nifti(tmp_path / "junk.nii")
    nibabel.save(nibabel.Nifti1Image(np.ones((20, 20, 20), np.int16), np.eye(4)), str(tmp_path / "cut.nii"))
    (tmp_path / "cut.nii").write_bytes((tmp_path / "cut.nii").read_bytes()[:2000])
    with pytest.raises(DatasetError, match=r"cut\.nii: cannot read the NIfTI voxel data"):
        read_nifti(tmp_path / "cut.nii")
    nibabel.save(nibabel.Nifti1Image(np.ones((2, 3, 4, 2), np.uint8), np.eye(4)), str(tmp_path / "series.nii.gz"))
    with pytest.raises(DatasetError, match=r"expected one 3-D volume, got dimensions \(2, 3, 4, 2\)"):
        read_nifti(tmp_path / "series.nii.gz")


@pytest.mark.parametrize("compressed", [True, False])
def test_metaimage_reader(tmp_path: Path, compressed: bool) -> None:
    _, labels = phantom_hu()
    path = tmp_path / "mask.mha"
    write_metaimage(path, labels.transpose(2, 1, 0), lps_affine_ijk(), compressed=compressed)
    image = read_metaimage(path)
    np.testing.assert_allclose(image.affine_lps, lps_affine_ijk())
    np.testing.assert_array_equal(labels_on_volume_grid(image, _phantom_volume()), labels)


def test_alignment_handles_permuted_and_flipped_axes_and_refuses_other_grids() -> None:
    _, labels = phantom_hu()
    volume = _phantom_volume()
    base = LabelImage(labels.transpose(2, 1, 0), lps_affine_ijk())
    # the same labels stored (k, j, i) with the column axis reversed
    nz, ny, nx = labels.shape
    arr = np.ascontiguousarray(labels[:, :, ::-1])  # (z, y, x reversed) -> index order (k, j, i')
    affine = np.zeros((4, 4))
    affine[3, 3] = 1.0
    sz, sy, sx = volume.spacing_zyx
    affine[:3, 0] = (0, 0, sz)  # array axis 0 = slice
    affine[:3, 1] = (0, sy, 0)  # array axis 1 = row
    affine[:3, 2] = (-sx, 0, 0)  # array axis 2 = column, reversed
    affine[:3, 3] = (sx * (nx - 1), 0, 0)
    np.testing.assert_array_equal(labels_on_volume_grid(LabelImage(arr, affine), volume), labels)
    np.testing.assert_array_equal(labels_on_volume_grid(base, volume), labels)
    shifted = LabelImage(base.array, base.affine_lps + np.array([[0, 0, 0, 3.0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]))
    with pytest.raises(DatasetError, match="must cover exactly the image grid"):
        labels_on_volume_grid(shifted, volume)
    rotated = LabelImage(base.array, base.affine_lps @ np.array([[0.8, -0.6, 0, 0], [0.6, 0.8, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]))
    with pytest.raises(DatasetError, match="not on the image's voxel grid"):
        labels_on_volume_grid(rotated, volume)


def test_volume_from_label_image_keeps_geometry(tmp_path: Path) -> None:
    hu, _ = phantom_hu()
    path = tmp_path / "image.mha"
    affine = lps_affine_ijk()
    affine[:3, 3] = (-10.0, 20.0, -300.0)
    write_metaimage(path, np.clip(hu + 1024, 0, 255).transpose(2, 1, 0), affine)  # uchar writer: values only need to round-trip
    volume = volume_from_label_image(read_metaimage(path))
    assert volume.shape == hu.shape
    assert volume.origin == (-10.0, 20.0, -300.0)
    np.testing.assert_allclose(volume.index_to_patient((2, 3, 4)), affine[:3, :3] @ np.array([4, 3, 2]) + affine[:3, 3])


def test_a_manifest_that_does_not_name_its_mask_structure_is_refused(tmp_path: Path) -> None:
    root = make_slice_dataset(tmp_path / "s", n=1)
    cases = ADAPTERS["png-slices"].cases(root, {"value_offset": SLICE_OFFSET})
    with pytest.raises(DatasetError, match="options.structure is required"):
        ADAPTERS["png-slices"].load(root, cases[0], {"value_offset": SLICE_OFFSET})


def test_datasets_add_refuses_an_option_that_is_not_yaml_with_a_hint(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from radpilot.cli import app

    result = CliRunner().invoke(
        app,
        [
            "datasets",
            "add",
            str(tmp_path),
            "--name",
            "x",
            "--layout",
            "dicom-series",
            "--option",
            "series_dir={case}/dicom",
            "--data-dir",
            str(tmp_path / "data"),
        ],
    )
    assert result.exit_code == 2, result.output
    assert "--option series_dir: '{case}/dicom' is not valid YAML" in result.output and "quote a value" in result.output
    assert not (tmp_path / "data").exists() or not list((tmp_path / "data").rglob("*.yaml"))
