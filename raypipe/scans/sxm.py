"""Nanonis ``.sxm`` images; a folder of them at different Z offsets forms one stack.

No maintained reader works with numpy 2 (nanonispy 1.1 is from 2021), so this is a small parser of
the documented layout: an ASCII header of ``:KEY:`` lines ending with ``:SCANIT_END:``, the bytes
``\\x1a\\x04``, then big-endian float32 frames, one per channel and direction listed in the
``:DATA_INFO:`` table (``both`` = forward then backward), each ``SCAN_PIXELS`` (x, y) in scan order.
The frequency-shift channel (name containing "freq") is taken, else the first; forward direction only;
frames scanned "up" are flipped so row 0 is the top. ``SCAN_RANGE`` (m) gives the field of view.
Heights come from the file names (``-180pm``) when present, else from the header's ``Z-Controller>Z (m)``;
the lowest is the closest.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from raypipe.errors import ScanError
from raypipe.scans.images import crop_common, file_height
from raypipe.scans.limits import check_image, check_stack, regular_file
from raypipe.scans.stack import ScanStack

_END = b":SCANIT_END:"
_MAX_HEADER = 4 * 2**20


def parse_header(text: str) -> dict[str, str]:
    """``:KEY:`` lines -> {KEY: value text (may span lines)}."""
    header: dict[str, str] = {}
    key = None
    for line in text.splitlines():
        if line.startswith(":") and line.endswith(":") and len(line) > 2:
            key = line[1:-1]
            header[key] = ""
        elif key is not None:
            header[key] = (header[key] + "\n" + line).strip("\n")
    return header


def read_sxm(path: Path) -> tuple[np.ndarray, dict[str, str]]:
    """(image (rows, cols) float32 top row first, header) of one .sxm file."""
    regular_file(path)
    with open(path, "rb") as f:
        head = f.read(_MAX_HEADER)
        end = head.find(_END)
        start = head.find(b"\x1a\x04", end)
        if end < 0 or start < 0:
            raise ScanError(path, "not a Nanonis SXM file (no ':SCANIT_END:' header end in its first 4 MB)")
        header = parse_header(head[:end].decode("latin-1"))
        try:
            nx, ny = (int(v) for v in header["SCAN_PIXELS"].split())
            rows = [r.split("\t") for r in header["DATA_INFO"].strip().splitlines()[1:]]
        except (KeyError, ValueError) as exc:
            raise ScanError(path, f"SXM header lacks SCAN_PIXELS or DATA_INFO ({exc})") from exc
        check_image(path, nx, ny)  # the declared size, before the data is read
        frames = []  # (name, direction) in file order
        for row in rows:
            cells = [c.strip() for c in row if c.strip()]
            if len(cells) < 4:
                raise ScanError(path, f"SXM DATA_INFO row {row!r} has fewer than 4 columns")
            name, direction = cells[1], cells[3]
            frames += [(name, "forward")] + ([(name, "backward")] if direction == "both" else [])
        if not frames or len(frames) > 256:
            raise ScanError(path, f"SXM DATA_INFO lists {len(frames)} frames")
        names = [n for n, _ in frames]
        pick = next((k for k, n in enumerate(names) if "freq" in n.lower()), 0)
        f.seek(start + 2 + pick * nx * ny * 4)
        data = np.frombuffer(f.read(nx * ny * 4), dtype=">f4")  # only the frame used
    if data.size < nx * ny:
        raise ScanError(path, f"truncated SXM data: {data.size} values for a frame of {nx}x{ny}")
    image = data.reshape(ny, nx).astype(np.float32)
    if header.get("SCAN_DIR", "").strip() == "up":
        image = image[::-1]
    header["_channel"] = names[pick]
    return np.ascontiguousarray(image), header


def read_sxm_folder(folder: Path, closest: str | None = None) -> ScanStack:
    files = sorted(p for p in folder.glob("*.sxm") if not p.is_dir())
    if len(files) < 2:
        raise ScanError(folder, f"an SXM stack needs at least 2 .sxm files, found {len(files)}")
    check_stack(folder, len(files), 1, 1)
    loaded = [read_sxm(f) for f in files]
    check_stack(folder, len(files), max(im.shape[0] for im, _ in loaded), max(im.shape[1] for im, _ in loaded))
    heights = [file_height(f.name) for f in files]
    rule = "height in file name"
    if any(h is None for h in heights):
        try:
            heights = [float(h["Z-Controller>Z (m)"]) * 1e10 for _, h in loaded]
            rule = "header Z-Controller>Z"
        except (KeyError, ValueError) as exc:
            raise ScanError(folder, "SXM files carry no height in their names or headers") from exc
    order = np.argsort(heights)[::-1] if closest == "last" else np.argsort(heights)
    hs = np.array(heights)[order]
    images, adjust = crop_common([loaded[i][0] for i in order])
    header = loaded[order[0]][1]
    try:
        fov = tuple(float(v) * 1e10 for v in header["SCAN_RANGE"].split())
    except (KeyError, ValueError):
        fov = None
    metadata = {
        "source": str(folder), "format": "nanonis-sxm", "name": folder.name, "fov": fov,
        "mode": "FM df" if "freq" in header["_channel"].lower() else "unknown", "channel": header["_channel"],
        "files": [files[i].name for i in order], "order_rule": f"{rule}, "
        + ("largest" if closest == "last" else "smallest") + " closest",
    }
    if adjust:
        metadata["size_adjust"] = adjust
    return ScanStack(images, np.abs(hs - hs[0]), metadata)
