"""``evaluate`` and ``calibrate``: a model against simulated truth, the paper's way, automatically.

Each stack -> prediction -> graph -> ``score`` against the true graph (:mod:`raypipe.training.validation`);
the figures are fractions (total, structure, composition), mean per-atom precision/recall, the same by
corrugation bin, and an element confusion matrix (true element -> predicted element, "-" for an atom
missed or invented).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from raypipe.chem.depiction import decode_png
from raypipe.images import grey_rgb
from raypipe.model.inference import Model, load_model
from raypipe.model.reading import read_prediction
from raypipe.storage import StorageOptions
from raypipe.training.validation import predict_rows, score_counts, score_rows


def gallery(rows: list[dict], depictions: np.ndarray, path: str | Path, n: int = 12) -> Path:
    """A PNG sheet: per row, the closest and farthest slices, the prediction and the truth."""
    tiles = []
    for row, depiction in list(zip(rows, depictions))[:n]:
        slices = [grey_rgb(row["stack"][0]), grey_rgb(row["stack"][-1])]
        tiles.append(np.concatenate(slices + [depiction, decode_png(row["target_png"])], axis=1))
    sheet = np.concatenate(tiles, axis=0) if tiles else np.zeros((8, 8, 3), np.uint8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(sheet).save(path)
    return path


def _splits(dataset_uri: str, storage_options: StorageOptions) -> str:
    import pyarrow.parquet as pq

    from raypipe.training.data import list_shards
    from raypipe.storage import filesystem

    fs, _ = filesystem(dataset_uri, storage_options)
    counts: Counter = Counter()
    for path in list_shards(dataset_uri, storage_options):
        with fs.open(path, "rb") as f:
            counts.update(pq.read_table(f, columns=["split"])["split"].to_pylist())
    return ", ".join(f"{k} ({v} rows)" for k, v in sorted(counts.items())) or "no rows"


def _readings(model: Model, rows: list[dict]):
    """The model's prediction for simulated rows, its readings, and which formulas are right."""
    prediction = predict_rows(model, rows)
    readings = read_prediction(prediction, model.config.window, model.calibration)
    return prediction, readings, [r.formula == row["formula"] for r, row in zip(readings, rows)]


def _rows(dataset_uri: str, split: str | None, limit: int | None, storage_options: StorageOptions) -> list[dict]:
    from raypipe.simulation.export import read_shard_rows

    rows = list(read_shard_rows(dataset_uri, split=split, limit=limit, storage_options=storage_options))
    if not rows:
        raise ValueError(f"{dataset_uri}: no rows in split {split!r}; it holds {_splits(dataset_uri, storage_options)} "
                         "(--split all evaluates every row)")
    return rows


def evaluate(dataset_uri: str, model: Model | str | Path | None = None, *, split: str | None = "test",
             limit: int | None = None, gallery_path: str | Path | None = None,
             reliability_path: str | Path | None = None, views: int | None = None,
             storage_options: StorageOptions = None) -> dict:
    """Evaluate ``model`` (default: the shipped one) on one split of a simulated dataset (``split=None``:
    every row, e.g. a dataset simulated for a check).

    Returns ``n``, ``total``, ``structure``, ``composition`` (fractions), ``precision``/``recall``,
    ``by_corrugation``, ``confusion``, ``smiles_right`` (readings whose SMILES is the true molecule's, bond
    orders and charges too), for a model with a count output ``counts_formula``, ``counts_heavy``
    and ``counts_mae`` (:func:`raypipe.training.validation.score_counts`), and ``calibration`` (the expected calibration error of the model's
    ``confidence`` against formulas right, its reliability bins, and the mean confidence beside the
    fraction right; null for a model without calibration); with ``gallery_path`` also writes the gallery
    PNG there, with ``reliability_path`` the reliability diagram. ``views``: test-time augmentation
    (default: the model's own; its calibration was fitted with those).
    """
    from raypipe.model.calibration import reliability, reliability_png

    model = model if isinstance(model, Model) else load_model(model, storage_options=storage_options, views=views)
    if views is not None and model.views != views:
        from dataclasses import replace

        model = replace(model, views=views)
    rows = _rows(dataset_uri, split, limit, storage_options)
    prediction, readings, right = _readings(model, rows)
    result = {"model": model.tag, "views": model.views, "split": split or "all",
              **score_rows([r.graph for r in readings], rows), **score_counts(prediction.counts, rows)}
    result["calibration"] = None
    if model.calibration is not None:
        confidence = [r.confidence for r in readings]
        ece, bins = reliability(confidence, right)
        result["calibration"] = {"ece": ece, "mean_confidence": float(np.mean(confidence)),
                                 "formula_right": float(np.mean(right)), "bins": bins}
        if reliability_path is not None:
            Path(reliability_path).parent.mkdir(parents=True, exist_ok=True)
            Path(reliability_path).write_bytes(reliability_png(bins, ece, f"{model.name}, {split or 'all'}"))
            result["reliability"] = str(reliability_path)
    if gallery_path is not None:
        result["gallery"] = str(gallery(rows, prediction.depictions, gallery_path))
    return result


def calibrate(dataset_uri: str, model: str | Path | None, out: str | Path, *, split: str = "val",
              limit: int | None = None, views: int | None = None, storage_options: StorageOptions = None) -> dict:
    """Fit the model's confidence (P(formula right)) on a split with known truth and write a copy of the
    model file with that calibration in its header to ``out``; with ``views`` the copy predicts with that
    many views (test-time augmentation, ``raypipe.model.inference.VIEWS``; default: the model's own),
    and is calibrated with them. Returns the fit's summary."""
    from raypipe.model.calibration import fit, reliability
    from raypipe.model.files import rewrite_model

    loaded = load_model(model, storage_options=storage_options, views=views)
    rows = _rows(dataset_uri, split, limit, storage_options)
    _, readings, right = _readings(loaded, rows)
    feats = [r.features for r in readings]
    calibration = fit(feats, right, fitted_on=f"{dataset_uri} split {split}, {len(rows)} stacks, "
                                              f"{loaded.views} views")
    rewrite_model(model, out, calibration=calibration, views=loaded.views, storage_options=storage_options)
    ece, bins = reliability([calibration.predict(f) for f in feats], right)
    return {"model": str(out), "n": len(rows), "views": loaded.views, "formula_right": float(np.mean(right)),
            "ece_on_fit": ece,
            "weights": dict(zip(calibration.features, calibration.weights)), "bias": calibration.bias}
