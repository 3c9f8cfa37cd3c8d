"""Scoring a model's readings against simulated truth, the paper's way: each stack -> prediction
(:meth:`~raypipe.model.inference.Model.infer`) -> graph (:mod:`raypipe.model.reading`) -> ``score`` against
the true graph. Used by validation during training and by :func:`raypipe.evaluate`.

:func:`validate_pixels` needs no RDKit (a bare GPU machine): it scores pixels only.
"""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np

from raypipe.chem.elements import ELEMENTS
from raypipe.model.inference import Model, Prediction

VALIDATION_BATCH = 16  # stacks preprocessed and predicted at a time


def predict_rows(model: Model, rows: list[dict], batch_size: int = VALIDATION_BATCH) -> Prediction:
    """The model's prediction for simulated rows (each with a raw ``stack``), preprocessed as a scan is."""
    from raypipe.scans.preprocess import normalise

    parts = [model.infer(np.stack([normalise(r["stack"].astype(np.float32)) for r in rows[k:k + batch_size]]))
             for k in range(0, len(rows), batch_size)]
    return Prediction.concatenate(parts, model.config.size, model.has_centres, model.has_counts)


def score_rows(graphs: list, rows: list[dict]) -> dict:
    """Scores of read-back ``graphs`` (MolGraphs) against the rows' truth: fractions ``total``,
    ``structure``, ``composition``, mean per-atom ``precision``/``recall``, the same ``by_corrugation``
    (with the visible-atom figures where the rows' atoms have heights), the element ``confusion`` (true ->
    read, "-" for missed/invented), and where the rows carry their molecule's SMILES ``smiles_right``: the
    fraction whose reading's SMILES is the true molecule's (bond orders and charges too; the paper's
    ``total`` compares atoms, elements and bonds only)."""
    from raypipe.chem.molecule import canonical_smiles
    from raypipe.chem.molgraph import MolGraph
    from raypipe.chem.scoring import aggregate, element_pairs, score

    scores, confusion = [], defaultdict(Counter)
    for predicted, row in zip(graphs, rows):
        truth = MolGraph.from_rows(row["atoms"], row["bonds"])
        atoms = list(row["atoms"])  # a list, or an array where the rows come from Ray Data
        scores.append(score(predicted, truth, [float(a["z"]) for a in atoms] if atoms and "z" in atoms[0] else None))
        for true_el, pred_el in element_pairs(predicted, truth):
            confusion[true_el][pred_el] += 1
    result = aggregate(scores, [r["corrugation"] for r in rows])
    result["confusion"] = {t: dict(sorted(c.items())) for t, c in sorted(confusion.items())}
    if rows and all(r.get("smiles") for r in rows):
        result["smiles_right"] = float(np.mean([g.smiles is not None and g.smiles == canonical_smiles(r["smiles"])
                                                for g, r in zip(graphs, rows)]))
    return result


def pixel_error(depictions: np.ndarray, rows: list[dict]) -> float:
    """Fraction of the molecule's pixels (true or predicted foreground) whose colour is wrong."""
    import io

    from PIL import Image

    wrong = fg = 0
    for depiction, row in zip(depictions, rows):
        truth = np.asarray(Image.open(io.BytesIO(row["target_png"])).convert("RGB"))
        mask = truth.any(axis=-1) | depiction.any(axis=-1)
        fg += int(mask.sum())
        wrong += int((np.abs(depiction.astype(int) - truth.astype(int)).sum(axis=-1)[mask] > 60).sum())
    return wrong / fg if fg else 0.0


def validate(generator, config, rows: list[dict]) -> dict:
    """Validation of a generator being trained: ``val_total``, ``val_structure``, ``val_composition``,
    ``val_precision``, ``val_recall`` and ``val_loss`` (:func:`pixel_error`); with a count output also
    ``val_counts_formula`` and ``val_counts_heavy`` (:func:`score_counts`)."""
    from raypipe.model.reading import read_prediction

    prediction = predict_rows(Model.from_generator(generator, config), rows)
    result = score_rows([r.graph for r in read_prediction(prediction, config.window)], rows)
    counts = {f"val_{k}": v for k, v in score_counts(prediction.counts, rows).items() if k != "counts_mae"}
    return {"val_total": result["total"], "val_structure": result["structure"],
            "val_composition": result["composition"], "val_precision": result["precision"],
            "val_recall": result["recall"], "val_loss": pixel_error(prediction.depictions, rows), **counts}


def score_counts(counts: np.ndarray | None, rows: list[dict]) -> dict:
    """How well a count output's formulas (``Prediction.counts``, rounded) match the rows' true molecules:
    ``counts_formula`` (fraction exactly right, hydrogens included), ``counts_heavy`` (the heavy atoms
    right) and ``counts_mae`` (mean absolute error of each element's count). Empty without counts."""
    from raypipe.chem.elements import formula_counts

    if counts is None or not len(rows):
        return {}
    truth = np.stack([formula_counts(_formula(row)) for row in rows])
    read = np.rint(np.maximum(counts, 0))
    return {"counts_formula": float((read == truth).all(axis=1).mean()),
            "counts_heavy": float((read[:, 1:] == truth[:, 1:]).all(axis=1).mean()),
            "counts_mae": {e: float(v) for e, v in zip(ELEMENTS, np.abs(counts - truth).mean(axis=0))}}


def _formula(row: dict) -> str:
    """A row's true formula: its ``formula`` field, else its atoms'."""
    from raypipe.chem.molecule import hill_formula

    return row.get("formula") or hill_formula([a["element"] for a in row["atoms"]])


def validate_pixels(generator, config, rows: list[dict]) -> dict:
    """``val_loss`` alone (no RDKit needed): the fraction of molecule pixels coloured wrong."""
    prediction = predict_rows(Model.from_generator(generator, config), rows)
    return {"val_total": 0.0, "val_loss": pixel_error(prediction.depictions, rows)}


def validator():
    """Validation by graph extraction where RDKit is installed, else by pixel error alone."""
    try:
        import rdkit  # noqa: F401
    except ImportError:
        return validate_pixels
    return validate
