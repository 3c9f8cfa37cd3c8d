"""A confidence that means what it says: the probability that a read-back formula is right.

The drawing score of a graph (how fully its balls and sticks are drawn; ``depiction_quality`` in the
rows) says how cleanly a depiction is drawn, not whether it is right. :class:`Calibration` maps features
of one prediction to P(formula right) with a logistic model fitted on simulated stacks whose truth is
known (the validation split), and is stored in the model file's header, so every row labelled by that
model carries a calibrated ``confidence``. Features (:func:`features`): the drawing score, the mean
per-pixel margin of the model's head over the molecule's pixels, the fraction of molecule pixels whose
margin is low, whether the graph is a valid molecule, and its size.

:func:`reliability` gives the expected calibration error (ECE: the mean |confidence - accuracy| over
confidence bins, weighted by their counts) and the bins for a reliability diagram.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

import numpy as np

FEATURES = ("quality", "margin", "uncertain", "valid", "log_atoms")


def margin_stats(margin: np.ndarray | None, depiction: np.ndarray) -> tuple[float, float]:
    """(mean margin, fraction of margins under 0.5) over the depiction's molecule pixels; (0.5, 0.5) when
    there are none or the margin is unknown."""
    foreground = depiction.any(axis=-1)
    if margin is None or not foreground.any():
        return 0.5, 0.5
    m = margin[foreground]
    return float(m.mean()), float((m < 0.5).mean())


def features(graph, margin_mean: float, margin_low: float) -> dict[str, float]:
    """Features of one prediction: its read-back ``graph`` (a MolGraph) and :func:`margin_stats`."""
    return {"quality": float(graph.confidence), "margin": float(margin_mean), "uncertain": float(margin_low),
            "valid": 1.0 if graph.smiles else 0.0, "log_atoms": math.log1p(len(graph.atoms))}


@dataclass
class Calibration:
    weights: list[float]
    bias: float
    features: tuple[str, ...] = FEATURES
    mean: list[float] = field(default_factory=list)  # feature standardisation
    scale: list[float] = field(default_factory=list)
    n: int = 0  # predictions it was fitted on
    positives: int = 0  # of which right
    fitted_on: str = ""

    def predict(self, feats: dict[str, float]) -> float:
        x = (np.array([feats[k] for k in self.features]) - np.array(self.mean)) / np.array(self.scale)
        return float(1.0 / (1.0 + math.exp(-float(np.dot(self.weights, x) + self.bias))))

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str | None) -> "Calibration | None":
        if not text:
            return None
        data = json.loads(text)
        data["features"] = tuple(data["features"])
        return cls(**data)


MIN_EVENTS = 20  # right and wrong readings each, before features are weighed (about 4 per feature)


def fit(rows: list[dict[str, float]], right: list[bool], *, l2: float = 1.0, fitted_on: str = "") -> Calibration:
    """Logistic regression (Newton's method, an L2 penalty ``l2`` on standardised features) of ``right``
    on the feature rows. With fewer than ``MIN_EVENTS`` right (or wrong) predictions the weights stay 0 and
    the bias is the smoothed base rate, (k + 0.5) / (n + 1): one or two right readings cannot teach which
    features matter, and a fit to them was measured to claim ~1.0 for readings right 3-8 % of the time."""
    x = np.array([[r[k] for k in FEATURES] for r in rows], dtype=np.float64).reshape(-1, len(FEATURES))
    y = np.array(right, dtype=np.float64)
    n, k = len(y), int(y.sum())
    mean = x.mean(axis=0) if n else np.zeros(len(FEATURES))
    scale = np.where(x.std(axis=0) > 1e-9, x.std(axis=0), 1.0) if n else np.ones(len(FEATURES))
    base = (k + 0.5) / (n + 1)
    w, b = np.zeros(len(FEATURES)), math.log(base / (1 - base))
    if min(k, n - k) >= MIN_EVENTS:
        z = (x - mean) / scale
        a = np.hstack([z, np.ones((n, 1))])
        theta = np.append(w, b)
        penalty = np.diag([l2] * len(FEATURES) + [0.0])
        for _ in range(50):
            p = 1 / (1 + np.exp(-(a @ theta)))
            grad = a.T @ (p - y) + penalty @ theta
            hess = (a * (p * (1 - p))[:, None]).T @ a + penalty + 1e-9 * np.eye(len(theta))
            step = np.linalg.solve(hess, grad)
            theta -= step
            if np.abs(step).max() < 1e-8:
                break
        w, b = theta[:-1], float(theta[-1])
    return Calibration(w.tolist(), float(b), FEATURES, mean.tolist(), scale.tolist(), n, k, fitted_on)


def reliability(confidence: list[float], right: list[bool], bins: int = 10) -> tuple[float, list[dict]]:
    """(ECE, bins): per confidence bin its count, mean confidence and accuracy."""
    c, y = np.asarray(confidence, dtype=np.float64), np.asarray(right, dtype=np.float64)
    table, ece = [], 0.0
    for k in range(bins):
        lo, hi = k / bins, (k + 1) / bins
        inside = (c >= lo) & ((c < hi) if k < bins - 1 else (c <= hi))
        if inside.any():
            conf, acc = float(c[inside].mean()), float(y[inside].mean())
            ece += inside.sum() / len(c) * abs(conf - acc)
            table.append({"bin": f"{lo:.1f}-{hi:.1f}", "n": int(inside.sum()), "confidence": conf, "accuracy": acc})
    return float(ece), table


def reliability_png(table: list[dict], ece: float, title: str = "") -> bytes:
    """The reliability diagram (accuracy against confidence per bin, with counts) as PNG bytes."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.2, 4))
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    if table:
        ax.plot([t["confidence"] for t in table], [t["accuracy"] for t in table], "o-", label="this model")
        for t in table:
            ax.annotate(str(t["n"]), (t["confidence"], t["accuracy"]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
    ax.set_xlim(0, 1), ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (predicted P(formula right))"), ax.set_ylabel("fraction of formulas right")
    ax.set_title(f"{title} ECE {ece:.3f}".strip(), fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()
