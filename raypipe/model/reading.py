"""Reading a prediction: depiction (and atom-centre map) -> graph -> per-pixel margins -> calibration
features -> confidence. The one way every user turns what :meth:`raypipe.model.inference.Model.infer`
returns into molecules: the labelling pipeline, evaluation and validation, the scale search and
identification.

Needs RDKit (graph extraction); the model's other modules do not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from raypipe.chem.agreement import ElementCounts, counts_formula
from raypipe.chem.graph import MolGraph, extract_graph
from raypipe.errors import DepictionError
from raypipe.model.calibration import Calibration, features
from raypipe.window import Window


@dataclass
class Reading:
    """One stack's prediction read: its ``graph`` (the empty graph where the depiction shows no readable
    molecule: then ``error`` holds the :class:`~raypipe.errors.DepictionError`), the calibration
    ``features`` and the calibrated ``confidence`` (None for a model without calibration), and the count
    output's ``counts`` (None for a model without one)."""

    graph: MolGraph
    features: dict[str, float]
    confidence: float | None
    error: DepictionError | None = None
    counts: dict[str, float] | None = None

    @property
    def formula(self) -> str:
        """The graph's formula (its elements agreeing with the counts where the model has them)."""
        return self.graph.formula

    @property
    def formula_counts(self) -> str | None:
        """The count output's own formula (rounded counts), None for a model without one."""
        return counts_formula(self.counts)


def read_one(depiction: np.ndarray, window: Window, *, centres: np.ndarray | None = None,
             margins: tuple[float, float] = (0.5, 0.5), calibration: Calibration | None = None,
             counts: dict[str, float] | None = None, known: ElementCounts | None = None) -> Reading:
    """Read one predicted ``depiction`` (its ``centres`` map and ``counts`` where the model has them:
    ``Prediction.centre_map``, ``Prediction.count_of``; its ``Prediction.margin_stats``) on the model's
    ``window``. The graph's heavy atoms agree with the ``known`` formula where one is given
    (``ElementCounts.known``: a scan's sidecar), else with the model's ``counts``
    (:mod:`raypipe.chem.agreement`; both need the centre map).

    Examples:
        >>> import numpy as np
        >>> from raypipe.window import DEFAULT_WINDOW
        >>> reading = read_one(np.zeros((128, 128, 3), np.uint8), DEFAULT_WINDOW)
        >>> reading.formula, reading.confidence, reading.features["valid"]
        ('', None, 0.0)
    """
    try:
        graph, error = extract_graph(depiction, window, centres, known if known is not None else counts), None
    except DepictionError as exc:  # e.g. an early model's noise: read as the empty graph, scored as wrong
        graph, error = MolGraph([], []), exc
    feats = features(graph, *margins)
    return Reading(graph, feats, calibration.predict(feats) if calibration is not None else None, error, counts)


def read_prediction(prediction, window: Window, calibration: Calibration | None = None) -> list[Reading]:
    """Every stack of a :class:`~raypipe.model.inference.Prediction`, read by :func:`read_one`."""
    return [read_one(d, window, centres=prediction.centre_map(k), margins=prediction.margin_stats(k),
                     calibration=calibration, counts=prediction.count_of(k)) for k, d in enumerate(prediction.depictions)]
