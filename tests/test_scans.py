"""Readers of every supported scan format, on files the tests write and on the real stacks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import raypipe
from raypipe import ScanError, ScanStack, load_stack
from helpers import save_grey, synthetic_stack


def test_image_folder_by_index_first_is_closest(tmp_path: Path) -> None:
    stack = synthetic_stack(5)
    for k in (3, 0, 4, 1, 2):  # written out of order, on one scale
        Image.fromarray((stack[k] / stack.max() * 65535).astype(np.uint16)).save(tmp_path / f"image_{k}.png")
    loaded = load_stack(tmp_path)
    assert loaded.images.shape == (5, 64, 64)
    assert loaded.metadata["files"] == [f"image_{k}.png" for k in range(5)]
    assert loaded.metadata["order_rule"] == "index in file name, first closest"
    assert loaded.heights is None
    # contrast decreases away from the closest image
    assert np.ptp(loaded.images[0]) > np.ptp(loaded.images[-1])
    reversed_ = load_stack(tmp_path, closest="last")
    np.testing.assert_array_equal(reversed_.images, loaded.images[::-1])


def test_image_folder_by_height_in_name(tmp_path: Path) -> None:
    stack = synthetic_stack(3)
    names = ["df_2_-180pm.png", "df_1_-160pm.png", "df_0_-140pm.png"]  # -180 pm is the closest
    for name, image in zip(names, stack):
        save_grey(tmp_path / name, image)
    loaded = load_stack(tmp_path)
    assert loaded.metadata["files"] == names
    np.testing.assert_allclose(loaded.heights, [0.0, 0.2, 0.4])
    assert "smallest closest" in loaded.metadata["order_rule"]


def test_image_folder_rgb_and_uneven_sizes(tmp_path: Path) -> None:
    stack = synthetic_stack(3, size=40)
    for k, image in enumerate(stack):
        grey = (255 * image / image.max()).astype(np.uint8)
        rgb = np.repeat(grey[: 40 - k, : 40 - 2 * k, None], 3, axis=2)
        Image.fromarray(rgb).save(tmp_path / f"z{58 + 10 * k:03d}_1.jpg")
    loaded = load_stack(tmp_path)
    assert loaded.images.shape == (3, 38, 36)
    assert "centre-cropped" in loaded.metadata["size_adjust"]


def test_quam_layout_with_truth(tmp_path: Path) -> None:
    folder = tmp_path / "K040_Amp100" / "Conformer3D_CID_2519_K040_Amp100"
    folder.mkdir(parents=True)
    for k, image in enumerate(synthetic_stack(10)):
        save_grey(folder / f"Conformer3D_CID_2519_K040_Amp100_df_{k:03d}.jpg", image)
    (tmp_path / "JMOL_IMAGES").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "JMOL_IMAGES" / "2519.png")
    (tmp_path / "XYZ_FILES" / "2519").mkdir(parents=True)
    (tmp_path / "XYZ_FILES" / "2519" / "2519.xyz").write_text("1\n\nC 0 0 0\n")
    loaded = load_stack(folder)
    assert loaded.metadata["stiffness"] == 0.40 and loaded.metadata["amplitude"] == 1.00
    assert loaded.metadata["cid"] == 2519
    assert loaded.scan_id == folder.name
    np.testing.assert_allclose(loaded.heights, np.arange(10) * 0.1)
    assert loaded.metadata["truth_depiction"].endswith("JMOL_IMAGES/2519.png")
    assert loaded.metadata["truth_xyz"].endswith("2519.xyz")


def test_hdf5_archive_round_trip(tmp_path: Path) -> None:
    stacks = [ScanStack(synthetic_stack(10, seed=s), np.linspace(0, 0.9, 10), {"name": f"m{s}", "fov": [18.0, 18.0]})
              for s in range(3)]
    path = tmp_path / "archive.h5"
    assert raypipe.write_archive(path, stacks) == 3
    assert raypipe.list_archive(path) == sorted(s.scan_id for s in stacks)
    back = {s.scan_id: s for s in raypipe.read_archive(path)}
    for s in stacks:
        np.testing.assert_array_equal(back[s.scan_id].images, s.images)
        np.testing.assert_allclose(back[s.scan_id].heights, s.heights)
        assert back[s.scan_id].metadata["fov"] == [18.0, 18.0]
    one = load_stack(f"{path}::{stacks[1].scan_id}")
    np.testing.assert_array_equal(one.images, stacks[1].images)
    with pytest.raises(ScanError, match="holds 3 stacks"):
        load_stack(path)
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary file left


def test_npz_ed_afm_layout(tmp_path: Path) -> None:
    stack = synthetic_stack(6)
    np.savez(tmp_path / "scan.npz", data=np.moveaxis(stack, 0, -1), lengthX=16.0, lengthY=16.0)
    loaded = load_stack(tmp_path / "scan.npz")
    np.testing.assert_allclose(loaded.images, stack)
    assert tuple(loaded.metadata["fov"]) == (16.0, 16.0)
    np.testing.assert_allclose(load_stack(tmp_path / "scan.npz", closest="last").images, stack[::-1])


def write_sxm(path: Path, image: np.ndarray, z_m: float, scan_dir: str = "down") -> None:
    """A minimal Nanonis SXM file: header, \\x1a\\x04, big-endian frames (Z both, df forward)."""
    ny, nx = image.shape
    header = (
        f":NANONIS_VERSION:\n2\n:SCAN_PIXELS:\n       {nx}       {ny}\n:SCAN_RANGE:\n"
        f"           1.600000E-9           1.600000E-9\n:SCAN_DIR:\n{scan_dir}\n"
        f":Z-Controller>Z (m):\n{z_m:E}\n:DATA_INFO:\n"
        "\tChannel\tName\tUnit\tDirection\tCalibration\tOffset\n"
        "\t14\tZ\tm\tboth\t1.000E+0\t0.000E+0\n"
        "\t18\tOC_M1_Freq._Shift\tHz\tforward\t1.000E+0\t0.000E+0\n\n:SCANIT_END:\n\n\n"
    )
    frame = image[::-1] if scan_dir == "up" else image
    z = np.zeros_like(image)
    data = np.concatenate([z.ravel(), z.ravel(), frame.ravel()]).astype(">f4")
    path.write_bytes(header.encode("latin-1") + b"\x1a\x04" + data.tobytes())


def test_sxm_folder(tmp_path: Path) -> None:
    stack = synthetic_stack(4, size=32)
    for k, image in enumerate(stack):  # closest has the lowest Z
        write_sxm(tmp_path / f"scan_{3 - k:03d}.sxm", image, z_m=-2e-10 + k * 0.3e-10, scan_dir="up")
    loaded = load_stack(tmp_path)
    np.testing.assert_allclose(loaded.images, stack, rtol=1e-6)
    np.testing.assert_allclose(loaded.heights, [0.0, 0.3, 0.6, 0.9], atol=1e-9)
    assert loaded.metadata["fov"] == pytest.approx((16.0, 16.0))
    assert loaded.metadata["channel"] == "OC_M1_Freq._Shift"
    assert loaded.metadata["mode"] == "FM df"


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d / "missing", "no such file"),
        (lambda d: ((d / "a.xyzw").write_text("x"), d / "a.xyzw")[1], "unknown scan format"),
        (lambda d: (save_grey(d / "one.png", synthetic_stack(1)[0]), d / "one.png")[1], "single image"),
        (lambda d: ((d / "s").mkdir(), save_grey(d / "s" / "image_0.png", synthetic_stack(1)[0]), d / "s")[2],
         "at least 2 images"),
        (lambda d: ((d / "x.npz").write_bytes(b"PK\x03\x04 truncated"), d / "x.npz")[1],
         "unreadable or truncated NPZ"),
        (lambda d: (np.savez(d / "n.npz", data=np.full((16, 16, 3), np.nan)), d / "n.npz")[1], "NaN"),
        (lambda d: ((d / "bad.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 20), d / "bad.h5")[1],
         "unreadable or truncated HDF5"),
    ],
)
def test_bad_input_raises_scan_error(tmp_path: Path, make, message: str) -> None:
    path = make(tmp_path)
    with pytest.raises(ScanError, match=message) as info:
        load_stack(path)
    assert str(path) in str(info.value)


def test_truncated_image_names_the_file(tmp_path: Path) -> None:
    for k, image in enumerate(synthetic_stack(3)):
        save_grey(tmp_path / f"image_{k}.png", image)
    data = (tmp_path / "image_1.png").read_bytes()
    (tmp_path / "image_1.png").write_bytes(data[: len(data) // 3])
    with pytest.raises(ScanError, match="image_1.png: unreadable or truncated"):
        load_stack(tmp_path)


def test_truncated_sxm(tmp_path: Path) -> None:
    for k, image in enumerate(synthetic_stack(2, size=16)):
        write_sxm(tmp_path / f"s{k}.sxm", image, z_m=k * 1e-11)
    data = (tmp_path / "s1.sxm").read_bytes()
    (tmp_path / "s1.sxm").write_bytes(data[:-100])
    with pytest.raises(ScanError, match="s1.sxm: truncated SXM data"):
        load_stack(tmp_path)


def test_real_experimental_stacks(experimental: Path) -> None:
    manifest = json.loads((experimental / "manifest.json").read_text())
    for entry in manifest["stacks"]:
        stack = load_stack(experimental / entry["folder"])
        assert stack.n == len(list((experimental / entry["folder"]).glob("*.jpg")))
        assert stack.metadata["order_rule"] == "index in file name, first closest"
        assert stack.images.dtype == np.float32 and np.isfinite(stack.images).all()
        assert stack.scan_id.startswith(entry["folder"])
        x = raypipe.preprocess(stack)
        assert x.shape == (10, 128, 128)
        assert abs(float(x.mean())) < 1e-4 and abs(float(x.std()) - 1) < 1e-3


def test_a_new_format_is_one_entry_in_the_table(tmp_path, monkeypatch):
    """load_stack, find_units and load_source all read a format added to the table, and nothing else."""
    import numpy as np

    from raypipe.scans import formats
    from raypipe.scans.stack import ScanStack
    from raypipe.scans.units import find_units, load_source, unit_sources

    def read_txt(path, closest=None):
        images = np.loadtxt(path, dtype=np.float32).reshape(-1, 16, 16)
        return ScanStack(images, None, {"source": str(path), "format": "txt-stack", "fov": None})

    table = formats.formats() + [formats.ScanFormat("txt-stack", "file", (".stk",), read=read_txt)]
    monkeypatch.setattr(formats, "_CACHE", table)
    np.savetxt(tmp_path / "a.stk", np.arange(768, dtype=np.float32).reshape(3, 256))
    (tmp_path / "notes.txt").write_text("not a scan")
    assert formats.load_stack(tmp_path / "a.stk").n == 3
    units, ignored = find_units(str(tmp_path))
    assert [(u.kind, ignored) for u in units] == [("txt-stack", 1)]
    assert load_source(unit_sources(units[0])[0]).metadata["format"] == "txt-stack"


def test_sidecar_gives_scale_order_and_notes(tmp_path):
    """A raypipe.json beside the images: fov, closest end, heights, mode, notes; fov= on top; bad ones named."""
    import json

    import numpy as np
    import pytest

    from raypipe.errors import ScanError
    from raypipe.scans.formats import load_stack
    from raypipe.scans.units import find_units

    folder = tmp_path / "scan"
    folder.mkdir()
    stack = synthetic_stack(4, 32)
    for k, image in enumerate(stack):
        save_grey(folder / f"img_{k}.png", image)
    plain = load_stack(folder)
    assert plain.metadata["fov_source"] == "unknown" and plain.metadata.get("fov") is None
    (folder / "raypipe.json").write_text(json.dumps({"fov": 22.5, "closest": "last", "heights": [0, 30, 60, 90],
                                                     "mode": "FM df", "amplitude": 0.8, "notes": "PTCDA on Ag"}))
    read = load_stack(folder)
    assert read.metadata["fov"] == [22.5, 22.5] and read.metadata["fov_source"] == "sidecar"
    assert np.allclose(read.heights, [0, 0.3, 0.6, 0.9]) and read.metadata["amplitude"] == 0.8
    assert np.array_equal(read.images[0], plain.images[-1])  # the sidecar says the last image is closest
    assert load_stack(folder, fov=(30, 20)).metadata["fov"] == [30.0, 20.0]
    assert load_stack(folder, fov=30).metadata["fov_source"] == "user"
    units, ignored = find_units(str(tmp_path))
    assert len(units) == 1 and ignored == 0  # the sidecar belongs to its folder's unit
    before = units[0].fingerprint
    (folder / "raypipe.json").write_text(json.dumps({"fov": 25}))
    assert find_units(str(tmp_path))[0][0].fingerprint != before  # a changed sidecar relabels the stack
    for bad, needle in (({"fov": -3}, "field of view"), ({"colour": 1}, "unknown sidecar keys"),
                        ({"heights": [0, 1, 2]}, "3 heights for 4 images"), ({"closest": "top"}, "closest")):
        (folder / "raypipe.json").write_text(json.dumps(bad))
        with pytest.raises(ScanError, match=needle) as info:
            load_stack(folder)
        assert "raypipe.json" in str(info.value)


def test_a_files_own_sidecar_belongs_to_its_unit(tmp_path):
    """``scan.h5.raypipe.json`` beside a single-file stack: read with it (its formula checked), not counted as an
    ignored file, and a change to it (a formula added) relabels the stack."""
    import json

    import pytest

    from raypipe.errors import ScanError
    from raypipe.resources import EXAMPLES
    from raypipe.scans.archive import read_archive, write_archive
    from raypipe.scans.formats import load_stack
    from raypipe.scans.units import find_units

    stack = next(iter(read_archive(EXAMPLES / "scans" / "sample_scans.h5")))
    write_archive(tmp_path / "scan.h5", [stack])
    units, ignored = find_units(str(tmp_path))
    assert len(units) == 1 and ignored == 0 and not units[0].sidecar
    before = units[0].fingerprint
    (tmp_path / "scan.h5.raypipe.json").write_text(json.dumps({"formula": "C6H3BrCl2"}))
    units, ignored = find_units(str(tmp_path))
    assert len(units) == 1 and ignored == 0 and units[0].sidecar and units[0].fingerprint != before
    assert load_stack(tmp_path / "scan.h5").metadata["formula"] == "C6H3BrCl2"
    (tmp_path / "scan.h5.raypipe.json").write_text(json.dumps({"formula": "C6H3BrCl2 on Au"}))
    with pytest.raises(ScanError, match="not a formula") as info:
        load_stack(tmp_path / "scan.h5")
    assert "scan.h5.raypipe.json" in str(info.value)
    (tmp_path / "orphan.raypipe.json").write_text("{}")  # beside no scan: still an ignored file
    assert find_units(str(tmp_path))[1] == 1


def test_ppafm_npz_layout_is_read_along_its_axes(tmp_path):
    import numpy as np
    import pytest

    from raypipe.errors import ScanError
    from raypipe.scans.formats import load_stack

    nz, ny, nx = 10, 48, 64
    data = np.zeros((nz, ny, nx), np.float32)
    for k in range(nz):
        data[k, 40:44, 5:9] = 10 - k  # a feature near the top left (high y), fading with height
    lvec = np.array([[0, 0, 5.0], [16.0, 0, 0], [0, 12.0, 0], [0, 0, 0.9]])
    np.savez(tmp_path / "df.npz", data=data, lvec=lvec, atoms=np.zeros((0, 4)), lvec0=lvec)
    stack = load_stack(tmp_path / "df.npz")
    assert stack.images.shape == (10, 48, 64) and stack.metadata["fov"] == [16.0, 12.0]
    assert np.allclose(stack.heights, np.arange(10) * 0.1)
    assert stack.images[0].max() == 10 and stack.images[0][4:8, 5:9].min() == 10  # top rows: high y
    down = lvec.copy()
    down[3, 2] = -0.9
    np.savez(tmp_path / "down.npz", data=data, lvec=down, atoms=np.zeros((0, 4)), lvec0=down)
    assert load_stack(tmp_path / "down.npz").images[0].max() == 1  # the z vector points down: reversed
    np.savez(tmp_path / "bare.npz", data=data)  # ppafm's layout without its lvec: refused, not misread
    with pytest.raises(ScanError, match=r"would read as 64 images of 10 x 48 pixels"):
        load_stack(tmp_path / "bare.npz")


def test_a_text_file_named_like_an_image_is_said_to_be_no_image(tmp_path):
    """A lone scan.png holding text is reported as what it is, not as a stack of one image."""
    from raypipe import load_stack

    folder = tmp_path / "stack"
    folder.mkdir()
    (folder / "scan.png").write_text("not an image at all\n")
    with pytest.raises(ScanError, match=r"scan.png: not an image: no image format recognised"):
        load_stack(folder)
