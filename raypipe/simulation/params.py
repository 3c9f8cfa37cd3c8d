"""Imaging parameter sets: (oscillation amplitude in Å, CO lateral stiffness in N/m)."""

from __future__ import annotations

import hashlib
import itertools

import numpy as np

AMPLITUDES = (0.4, 0.6, 0.8, 1.0, 1.2, 1.4)
STIFFNESSES = (0.4, 0.6, 0.8, 1.0)
QUAM24 = tuple(itertools.product(AMPLITUDES, STIFFNESSES))

ParameterSpec = str | list[tuple[float, float]]


def parameter_sets(spec: ParameterSpec, molecule_id: str, seed: int) -> list[tuple[float, float]]:
    """The parameter sets one molecule is simulated with.

    ``spec``: ``"quam24"`` (QUAM-AFM's grid: amplitude {0.4..1.4} Å x stiffness {0.4..1.0} N/m),
    ``"random:K"`` (K sets drawn per molecule from that grid, without repetition, deterministic in
    ``seed`` and the molecule id) or an explicit list of (amplitude, stiffness) pairs.
    """
    if isinstance(spec, str):
        if spec == "quam24":
            return list(QUAM24)
        if spec.startswith("random:"):
            k = int(spec.split(":", 1)[1])
            if not 1 <= k <= len(QUAM24):
                raise ValueError(f"random:K needs 1 <= K <= {len(QUAM24)}, got {k}")
            digest = hashlib.sha256(f"{seed}:{molecule_id}".encode()).digest()
            rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
            return [QUAM24[i] for i in sorted(rng.choice(len(QUAM24), size=k, replace=False))]
        raise ValueError(f"unknown parameter sets {spec!r}: use 'quam24', 'random:K' or a list of pairs")
    pairs = [(float(a), float(k)) for a, k in spec]
    for a, k in pairs:
        if not (0.1 <= a <= 1.4 and 0.05 <= k <= 5.0):
            raise ValueError(f"parameter set ({a}, {k}) out of range: amplitude 0.1-1.4 Å, stiffness 0.05-5 N/m")
    return pairs


def parse_parameter_sets(text: str) -> ParameterSpec:
    """Command-line form: ``quam24``, ``random:K`` or ``A,K;A,K;...`` (e.g. ``0.6,0.4;1.0,0.8``)."""
    if text == "quam24" or text.startswith("random:"):
        return text
    try:
        return [tuple(float(v) for v in pair.split(",")) for pair in text.split(";") if pair]  # type: ignore[misc]
    except ValueError as exc:
        raise ValueError(f"cannot read parameter sets {text!r}: use quam24, random:K or A,K;A,K") from exc
