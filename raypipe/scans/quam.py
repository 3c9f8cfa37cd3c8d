"""The QUAM-AFM layout: ``Conformer3D_CID_<cid>_K<kkk>_Amp<aaa>/..._df_000.jpg`` to ``_df_009.jpg``.

df_000 is the closest tip-sample distance; the ten heights are 0.1 Å apart (QUAM-AFM's spacing).
``K040`` is a CO lateral stiffness of 0.40 N/m and ``Amp100`` an oscillation amplitude of 1.00 Å.
Ground truth is looked up in the folders above the stack (up to three levels):
``JMOL_IMAGES/<cid>.png`` and ``XYZ_FILES/<cid>/<cid>.xyz``; their paths go to metadata.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from raypipe.errors import ScanError
from raypipe.scans.images import crop_common, read_image
from raypipe.scans.stack import ScanStack

FOLDER = re.compile(r"^Conformer3D_CID_(\d+)_K(\d{3})_Amp(\d{3})$")
_DF = re.compile(r"_df_(\d{3})\.(?:jpg|jpeg|png)$", re.IGNORECASE)
QUAM_SPACING = 0.1  # Å between consecutive QUAM-AFM images


def is_quam_folder(path: Path) -> bool:
    return path.is_dir() and FOLDER.match(path.name) is not None


def read_quam_folder(folder: Path) -> ScanStack:
    cid, k, amp = FOLDER.match(folder.name).groups()  # type: ignore[union-attr]
    indexed = sorted((int(m.group(1)), p) for p in folder.iterdir() if (m := _DF.search(p.name)))
    if len(indexed) < 2:
        raise ScanError(folder, f"a QUAM-AFM stack needs df_000..df_009 images, found {len(indexed)}")
    images, adjust = crop_common([read_image(p) for _, p in indexed])
    metadata = {
        "source": str(folder), "format": "quam-afm", "name": folder.name, "cid": int(cid),
        "stiffness": int(k) / 100, "amplitude": int(amp) / 100, "mode": "FM df", "fov": None,
        "order_rule": "df_000 closest",
    }
    if adjust:
        metadata["size_adjust"] = adjust
    for parent in list(folder.parents)[:3]:
        depiction, xyz = parent / "JMOL_IMAGES" / f"{cid}.png", parent / "XYZ_FILES" / cid / f"{cid}.xyz"
        if depiction.is_file():
            metadata["truth_depiction"] = str(depiction)
        if xyz.is_file():
            metadata["truth_xyz"] = str(xyz)
    heights = QUAM_SPACING * np.array([i for i, _ in indexed], dtype=np.float64)
    return ScanStack(images, heights, metadata, scan_id=folder.name)
