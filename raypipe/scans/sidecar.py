"""What a scientist knows about a stack, written beside it: the sidecar file ``raypipe.json`` (or
``raypipe.yaml``) in a stack folder, or ``<file>.raypipe.json`` beside a single-file stack.

Every key is optional::

    {
      "fov": [25.0, 25.0],          # field of view (x, y) in Å; one number for a square
      "closest": "first",           # which end of the sorted images is the closest: first | last
      "heights": [0, 20, 40, 60],   # tip heights, closest first, in "heights_unit" (default pm)
      "heights_unit": "pm",         # pm | A
      "mode": "FM df",              # FM df | AM amplitude | AM phase
      "amplitude": 1.0,             # oscillation amplitude, Å (peak to peak)
      "stiffness": 0.6,             # CO lateral stiffness, N/m, when known
      "substrate": "Cu(111)",
      "notes": "free text",
      "candidates": ["c1ccccc1", "..."],  # the molecules that can be on the surface (SMILES), or a .smi path
      "formula": "C6H3BrCl2"        # the molecule's formula, when known: the graph's heavy atoms take its elements
    }

``load_stack`` applies it after reading (``metadata["sidecar"]`` records the file) and records where the
field of view came from in ``metadata["fov_source"]``: ``user`` (an explicit ``fov=``), ``sidecar``,
``file`` (the format records it) or ``unknown``. A malformed sidecar is a ScanError naming it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from raypipe.errors import ScanError
from raypipe.scans.stack import ScanStack

NAMES = ("raypipe.json", "raypipe.yaml", "raypipe.yml")
KEYS = {"fov", "closest", "heights", "heights_unit", "mode", "amplitude", "stiffness", "substrate", "notes",
        "candidates", "formula"}


def sidecar_path(source: Path) -> Path | None:
    """The sidecar of a stack folder or file, if there is one."""
    if source.is_dir():
        return next((source / n for n in NAMES if (source / n).is_file()), None)
    sibling = source.with_name(source.name + ".raypipe.json")
    return sibling if sibling.is_file() else None


def read_sidecar(path: Path) -> dict:
    """The sidecar's settings, checked (ScanError naming the file and the problem)."""
    try:
        text = path.read_text()
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except (OSError, ValueError) as exc:
        raise ScanError(path, f"unreadable sidecar ({exc})") from exc
    except Exception as exc:  # noqa: BLE001 - yaml's errors
        raise ScanError(path, f"unreadable sidecar ({exc})") from exc
    if not isinstance(data, dict):
        raise ScanError(path, "a sidecar must hold a mapping of settings")
    unknown = sorted(set(data) - KEYS)
    if unknown:
        raise ScanError(path, f"unknown sidecar keys {unknown}; known: {sorted(KEYS)}")
    if "fov" in data:
        data["fov"] = parse_fov(data["fov"], path)
    if data.get("closest") not in (None, "first", "last"):
        raise ScanError(path, f"closest must be 'first' or 'last', not {data['closest']!r}")
    if "heights" in data:
        unit = data.get("heights_unit", "pm")
        if unit not in ("pm", "A", "Å"):
            raise ScanError(path, f"heights_unit must be pm or A, not {unit!r}")
        try:
            heights = np.asarray(data["heights"], dtype=np.float64) / (100.0 if unit == "pm" else 1.0)
        except (TypeError, ValueError) as exc:
            raise ScanError(path, f"heights must be numbers ({exc})") from exc
        if heights.ndim != 1 or len(heights) < 2 or not np.all(np.diff(heights) > 0):
            raise ScanError(path, "heights must be 2 or more numbers increasing away from the closest image")
        data["heights"] = heights - heights[0]
    for key in ("amplitude", "stiffness"):
        if key in data and not isinstance(data[key], (int, float)):
            raise ScanError(path, f"{key} must be a number")
    if "formula" in data:
        from raypipe.chem.elements import formula_counts

        try:
            formula_counts(data["formula"] if isinstance(data["formula"], str) else "")
        except ValueError as exc:
            raise ScanError(path, str(exc)) from None
    return data


def parse_fov(value, where: object = "fov") -> tuple[float, float]:
    """``25`` or ``[25, 20]`` (Å) -> (x, y); anything else is a ScanError."""
    values = value if isinstance(value, (list, tuple)) else [value]
    try:
        numbers = [float(v) for v in values]
    except (TypeError, ValueError):
        numbers = []
    if len(numbers) not in (1, 2) or not all(2.0 <= v <= 1000.0 for v in numbers):
        raise ScanError(where, f"field of view {value!r}: give one or two lengths in Å between 2 and 1000")
    return (numbers[0], numbers[-1])


def apply_sidecar(stack: ScanStack, source: Path | None, fov=None) -> ScanStack:
    """The stack with the settings of the sidecar beside ``source`` (None: no sidecar) applied, then an
    explicit ``fov`` (Å) on top."""
    metadata = dict(stack.metadata)
    metadata.setdefault("fov_source", "file" if metadata.get("fov") else "unknown")
    images, heights = stack.images, stack.heights
    path = sidecar_path(source) if source is not None else None
    if path is not None:
        data = read_sidecar(path)
        metadata["sidecar"] = str(path)
        if data.get("closest") == "last":
            images = images[::-1].copy()
            heights = None if heights is None else (heights[-1] - heights[::-1])
            metadata["order_rule"] = f"{metadata.get('order_rule', 'reader')}, reversed by the sidecar"
        if "heights" in data:
            if len(data["heights"]) != len(images):
                raise ScanError(path, f"{len(data['heights'])} heights for {len(images)} images")
            heights = data["heights"]
        if "fov" in data:
            metadata["fov"], metadata["fov_source"] = list(data["fov"]), "sidecar"
        for key in ("mode", "amplitude", "stiffness", "substrate", "notes", "candidates", "formula"):
            if key in data:
                metadata[key] = data[key]
    if fov is not None:
        metadata["fov"], metadata["fov_source"] = list(parse_fov(fov)), "user"
    if metadata == stack.metadata and images is stack.images and heights is stack.heights:
        return stack
    return ScanStack(images, heights, metadata, scan_id=stack.scan_id)
