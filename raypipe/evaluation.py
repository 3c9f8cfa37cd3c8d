"""``evaluate``: a model against simulated truth, the paper's way, automatically.

Each stack -> predicted depiction -> ``extract_graph`` -> ``score`` against the true graph; the figures
are fractions (total, structure, composition), mean per-atom precision/recall, the same by
corrugation bin, and an element confusion matrix (true element -> predicted element, "-" for an atom
missed or invented).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

from raypipe.chem.depiction import decode_png
from raypipe.chem.graph import MolGraph, read_graph
from raypipe.chem.scoring import aggregate, element_pairs, score
from raypipe.model.inference import Model, Prediction, load_model
from raypipe.reports import grey_rgb
from raypipe.scans.preprocess import normalise
from raypipe.storage import StorageOptions


def predict_rows(model: Model, rows: list[dict], batch_size: int = 16) -> Prediction:
    """The model's :class:`~raypipe.model.inference.Prediction` (depictions, margins, centre maps) for
    simulated rows (each with a raw ``stack``)."""
    parts = []
    for k in range(0, len(rows), batch_size):
        batch = np.stack([normalise(r["stack"].astype(np.float32)) for r in rows[k:k + batch_size]])
        parts.append(model.infer(batch))
    if not parts:
        size = model.config.size
        empty = np.zeros((0, size, size), np.float32)
        return Prediction(np.zeros((0, size, size, 3), np.uint8), empty, empty if model.has_centres else None)
    return Prediction(np.concatenate([p.depictions for p in parts]), np.concatenate([p.margins for p in parts]),
                      np.concatenate([p.centres for p in parts]) if model.has_centres else None)


def read_graphs(prediction: Prediction, window) -> list[MolGraph]:
    """The graphs of a prediction's depictions (read at its atom-centre maps where the model has them)."""
    return [read_graph(d, window, prediction.centre_map(k)) for k, d in enumerate(prediction.depictions)]


def score_rows(depictions: np.ndarray, rows: list[dict], graphs: list[MolGraph] | None = None) -> dict:
    """Scores of predicted depictions (or their read-back ``graphs``) against the rows' truth: the figures
    described above."""
    scores, confusion = [], defaultdict(Counter)
    for k, (depiction, row) in enumerate(zip(depictions, rows)):
        predicted = graphs[k] if graphs is not None else read_graph(depiction)
        truth = MolGraph.from_rows(row["atoms"], row["bonds"])
        scores.append(score(predicted, truth))
        for true_el, pred_el in element_pairs(predicted, truth):
            confusion[true_el][pred_el] += 1
    result = aggregate(scores, [r["corrugation"] for r in rows])
    result["confusion"] = {t: dict(sorted(c.items())) for t, c in sorted(confusion.items())}
    return result


def pixel_error(depictions: np.ndarray, rows: list[dict]) -> float:
    """Fraction of the molecule's pixels (true or predicted foreground) whose colour is wrong."""
    wrong = fg = 0
    for depiction, row in zip(depictions, rows):
        truth = decode_png(row["target_png"])
        mask = truth.any(axis=-1) | depiction.any(axis=-1)
        fg += int(mask.sum())
        wrong += int((np.abs(depiction.astype(int) - truth.astype(int)).sum(axis=-1)[mask] > 60).sum())
    return wrong / fg if fg else 0.0


def validate(generator, config, rows: list[dict]) -> dict:
    """Validation of a generator being trained, through the model's own predict path: ``val_total``,
    ``val_structure``, ``val_composition``, ``val_precision``, ``val_recall`` and ``val_loss`` (the
    fraction of molecule pixels coloured wrong, :func:`pixel_error`)."""
    model = Model.from_generator(generator, config)
    was_training = model.generator.training
    model.generator.eval()
    try:
        prediction = predict_rows(model, rows)
    finally:
        model.generator.train(was_training)
    depictions = prediction.depictions
    result = score_rows(depictions, rows, read_graphs(prediction, config.window))
    return {"val_total": result["total"], "val_structure": result["structure"],
            "val_composition": result["composition"], "val_precision": result["precision"],
            "val_recall": result["recall"], "val_loss": pixel_error(depictions, rows)}


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

    from raypipe.model.data import list_shards
    from raypipe.storage import filesystem

    fs, _ = filesystem(dataset_uri, storage_options)
    counts: Counter = Counter()
    for path in list_shards(dataset_uri, storage_options):
        with fs.open(path, "rb") as f:
            counts.update(pq.read_table(f, columns=["split"])["split"].to_pylist())
    return ", ".join(f"{k} ({v} rows)" for k, v in sorted(counts.items())) or "no rows"


def _predictions(model: Model, rows: list[dict]) -> tuple[np.ndarray, list[MolGraph], list[dict], list[bool]]:
    """Depictions, read-back graphs, calibration features and formula-right flags of simulated rows."""
    from raypipe.model.calibration import features, margin_stats

    prediction = predict_rows(model, rows)
    depictions = prediction.depictions
    graphs = read_graphs(prediction, model.config.window)
    feats = [features(g, *margin_stats(m, d)) for g, m, d in zip(graphs, prediction.margins, depictions)]
    right = [g.formula == r["formula"] for g, r in zip(graphs, rows)]
    return depictions, graphs, feats, right


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
    ``by_corrugation``, ``confusion`` and ``calibration`` (the expected calibration error of the model's
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
    depictions, graphs, feats, right = _predictions(model, rows)
    result = {"model": model.tag, "views": model.views, "split": split or "all", **score_rows(depictions, rows, graphs)}
    result["calibration"] = None
    if model.calibration is not None:
        confidence = [model.calibration.predict(f) for f in feats]
        ece, bins = reliability(confidence, right)
        result["calibration"] = {"ece": ece, "mean_confidence": float(np.mean(confidence)),
                                 "formula_right": float(np.mean(right)), "bins": bins}
        if reliability_path is not None:
            Path(reliability_path).parent.mkdir(parents=True, exist_ok=True)
            Path(reliability_path).write_bytes(reliability_png(bins, ece, f"{model.name}, {split or 'all'}"))
            result["reliability"] = str(reliability_path)
    if gallery_path is not None:
        result["gallery"] = str(gallery(rows, depictions, gallery_path))
    return result


def calibrate(dataset_uri: str, model: str | Path | None, out: str | Path, *, split: str = "val",
              limit: int | None = None, views: int | None = None, storage_options: StorageOptions = None) -> dict:
    """Fit the model's confidence (P(formula right)) on a split with known truth and write a copy of the
    model file with that calibration in its header to ``out``; with ``views`` the copy predicts with that
    many views (test-time augmentation, ``raypipe.model.inference.VIEWS``; default: the model's own),
    and is calibrated with them. Returns the fit's summary."""
    from raypipe.model.calibration import fit, reliability
    from raypipe.model.inference import rewrite_model

    loaded = load_model(model, storage_options=storage_options, views=views)
    rows = _rows(dataset_uri, split, limit, storage_options)
    _, _, feats, right = _predictions(loaded, rows)
    calibration = fit(feats, right, fitted_on=f"{dataset_uri} split {split}, {len(rows)} stacks, "
                                              f"{loaded.views} views")
    rewrite_model(model, out, calibration=calibration, views=loaded.views, storage_options=storage_options)
    ece, bins = reliability([calibration.predict(f) for f in feats], right)
    return {"model": str(out), "n": len(rows), "views": loaded.views, "formula_right": float(np.mean(right)),
            "ece_on_fit": ece,
            "weights": dict(zip(calibration.features, calibration.weights)), "bias": calibration.bias}
