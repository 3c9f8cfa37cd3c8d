"""A poisoned night: good scans among files built to stall or exhaust the job; time and peak memory.

    python bench/bench_poison.py [--good 20]

Poison (each small on disk): an HDF5 archive declaring a (10, 20000, 20000) float32 stack (7 KB), ten PNGs
declaring 13000 x 13000 pixels in one folder (under Pillow's own bomb limit), a FIFO named ``*.png``, an
``.sxm`` folder whose files are symlinks to /dev/zero, a negative ``SCAN_PIXELS``, a sub-group inside
``stacks``. The job (``jobs/label.py`` in its own process, as cron runs it) must end with every good stack
labelled and each poison an error row. Reports wall time and the peak resident memory of the largest single
process and of the whole process tree (sampled every 0.2 s).
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path

import h5py
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def _png_declaring(path: Path, width: int, height: int) -> None:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    stream = zlib.compress(b"\0" * (width + 1) * 64)  # 64 real rows, then the stream ends
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", stream) + chunk(b"IEND", b""))


def build(src: Path, good: int) -> None:
    from raypipe.scans.archive import FORMAT

    rng = np.random.default_rng(0)
    for k in range(good):
        folder = src / f"good{k:03d}"
        folder.mkdir(parents=True)
        base = rng.normal(size=(64, 64))
        for z in range(10):
            img = ((base * (1 - 0.05 * z) - base.min()) / np.ptp(base) * 200).clip(0, 255).astype(np.uint8)
            Image.fromarray(img).save(folder / f"img_{z}.png")
    with h5py.File(src / "bomb.h5", "w") as f:
        f.attrs["format"], f.attrs["version"] = FORMAT, 1
        f.create_group("stacks").create_dataset("huge", shape=(10, 20000, 20000), dtype="f4", chunks=(1, 100, 100))
    with h5py.File(src / "grouped.h5", "w") as f:
        f.attrs["format"], f.attrs["version"] = FORMAT, 1
        f.create_group("stacks").create_group("sub")
    big = src / "big_pngs"
    big.mkdir()
    for z in range(10):
        _png_declaring(big / f"img_{z}.png", 13000, 13000)
    fifo = src / "fifo"
    fifo.mkdir()
    os.mkfifo(fifo / "img_0.png")
    zero = src / "zero_sxm"
    zero.mkdir()
    for name in ("a_-100pm.sxm", "b_-200pm.sxm"):
        (zero / name).symlink_to("/dev/zero")
    negative = src / "negative_sxm"
    negative.mkdir()
    header = (":SCAN_PIXELS:\n-5 -5\n:DATA_INFO:\n\tChannel\tName\tUnit\tDirection\n"
              "\t1\tFrequency_Shift\tHz\tboth\n:SCANIT_END:\n").encode()
    for name in ("a_-100pm.sxm", "b_-200pm.sxm"):
        (negative / name).write_bytes(header + b"\x1a\x04" + b"\0" * 64)


def _rss_by_pid(root: int) -> dict[int, int]:
    """Resident bytes of ``root`` and all its descendants."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
            pid, ppid = int(status.parent.name), int(fields["PPid"])
            children.setdefault(ppid, []).append(pid)
            rss[pid] = int(fields.get("VmRSS", "0 kB").split()[0]) * 1024
        except (OSError, KeyError, ValueError):
            continue
    tree, todo = {}, [root]
    while todo:
        pid = todo.pop()
        tree[pid] = rss.get(pid, 0)
        todo += children.get(pid, [])
    return tree


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--good", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "src", Path(tmp) / "out"
        build(src, args.good)
        start = time.perf_counter()
        job = subprocess.Popen([sys.executable, str(ROOT / "jobs" / "label.py"), str(src), "--out", str(out),
                                "--settle", "0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               cwd=ROOT)
        peak = {"process": 0, "tree": 0}
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                tree = _rss_by_pid(job.pid)
                peak["process"] = max(peak["process"], max(tree.values(), default=0))
                peak["tree"] = max(peak["tree"], sum(tree.values()))
                time.sleep(0.2)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        output = job.communicate(timeout=900)[0]
        seconds = time.perf_counter() - start
        stop.set()
        sampler.join()
        from raypipe.labels.table import read_labels

        rows = read_labels(str(out), columns=["unit", "status", "error"]).to_pylist()
    ok = sum(r["status"] == "ok" for r in rows)
    errors = {Path(r["unit"]).name: r["error"][:90] for r in rows if r["status"] != "ok"}
    print(json.dumps({"exit": job.returncode, "seconds": round(seconds, 1), "good": args.good, "ok_rows": ok,
                      "error_rows": errors, "peak_process_MiB": round(peak["process"] / 2**20),
                      "peak_tree_MiB": round(peak["tree"] / 2**20)}, indent=2))
    if job.returncode:
        print(output[-3000:])


if __name__ == "__main__":
    main()
