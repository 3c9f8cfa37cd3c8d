"""Estimating the field of view of a scan whose scale is unknown (exported images), by test-time search:
the model reads the stack at several assumed fields of view and the reading it is most confident in wins.

Confidence here is the model's calibrated P(formula right) where it has a calibration, else the mean
per-pixel margin of its head over the molecule's pixels; the drawing score breaks ties. The chosen field
of view is recorded in the row (``fov``, ``fov_source = "estimated"``).
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
    from raypipe.chem.graph import extract_graph
    from raypipe.model.calibration import features, margin_stats
    from raypipe.scans.preprocess import preprocess

    window = model.config.window
    inputs = np.stack([preprocess(with_fov(stack, f), n_slices=model.config.n_slices, window=window) for f in fovs])
    depictions, margins = model.predict(inputs, with_margin=True)
    tried = []
    for fov, depiction, margin in zip(fovs, depictions, margins):
        graph = extract_graph(depiction, window)
        mean, low = margin_stats(margin, depiction)
        feats = features(graph, mean, low)
        confidence = model.calibration.predict(feats) if model.calibration is not None else mean
        tried.append({"fov": float(fov), "confidence": float(confidence), "margin": mean,
                      "quality": float(graph.confidence), "atoms": len(graph.atoms)})
    best = max(tried, key=lambda t: (t["atoms"] > 0, round(t["confidence"], 3), t["quality"]))
    return best["fov"], tried
