"""Estimating the field of view of a scan whose scale is unknown (exported images), by test-time search:
the model reads the stack at several assumed fields of view and the reading it is most confident in wins.

The criterion is the model's **confidence**: its calibrated P(formula right) where it has a calibration
that weighs features (one fitted on too few right readings is a constant base rate), else the mean per-pixel margin of its head over the molecule's pixels; the drawing score breaks ties.
Each try also records the median ratio of the read-back heavy-atom bonds to their ideal lengths
(``bond_ratio``: 1 at the right scale for a model that draws atoms where they are); measured with
the shipped model it chose worse than the confidence (bench/bench_scale.py, docs/formats.md), so it is recorded, not
used. The chosen field of view is recorded in the row (``fov``, ``fov_source = "estimated"``).
"""

from __future__ import annotations

import numpy as np

from raypipe.scans.stack import ScanStack

FOVS = (11.0, 13.0, 15.0, 18.0, 21.0, 24.0, 28.0, 33.0)  # Å: a scan of a small molecule to a large one


def with_fov(stack: ScanStack, fov: float) -> ScanStack:
    metadata = dict(stack.metadata, fov=[fov, fov * stack.images.shape[1] / stack.images.shape[2]])
    return ScanStack(stack.images, stack.heights, metadata, scan_id=stack.scan_id)


def estimate_fov(stack: ScanStack, model, fovs=FOVS) -> tuple[float, list[dict]]:
    """(best field of view in Å along x, one dict per tried fov: fov, confidence, margin, quality)."""
    from raypipe.model.reading import read_prediction
    from raypipe.scans.preprocess import preprocess

    window = model.config.window
    inputs = np.stack([preprocess(with_fov(stack, f), n_slices=model.config.n_slices, window=window) for f in fovs])
    informative = model.calibration is not None and any(model.calibration.weights)
    readings = read_prediction(model.infer(inputs), window, model.calibration if informative else None)
    tried = [{"fov": float(fov), "confidence": float(r.confidence if informative else r.features["margin"]),
              "margin": r.features["margin"], "quality": float(r.graph.confidence), "atoms": len(r.graph.atoms),
              "bond_ratio": bond_ratio(r.graph)} for fov, r in zip(fovs, readings)]
    best = max(tried, key=_preference)
    return best["fov"], tried


def bond_ratio(graph) -> float | None:
    """Median length of the graph's heavy-atom bonds over their ideal lengths; None with fewer than 3."""
    from raypipe.chem.molgraph import ideal_length

    xy = graph.positions
    ratios = [float(np.hypot(*(xy[i] - xy[j]))) / ideal_length(graph.atoms, i, j) for i, j in graph.bonds
              if graph.atoms[i].element != "H" and graph.atoms[j].element != "H"]
    return float(np.median(ratios)) if len(ratios) >= 3 else None


def _preference(tried: dict) -> tuple:
    return (tried["atoms"] > 0, round(tried["confidence"], 3), tried["quality"])
