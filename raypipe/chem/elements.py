"""Per-element constants: the QUAM-AFM element set, depiction colours and ball sizes, covalent radii.

Colours start from Jmol's CPK scheme; four are moved so every element is told from every other by
colour alone (the smallest RGB distance between two elements or the black background is > 90):
F  Jmol pale green (144,224,80) is close to Cl green  -> cyan (0,230,230)
Br Jmol (166,41,41) is close to O red                 -> brown (150,80,0)
P  Jmol orange (255,128,0) is kept; I Jmol (148,0,148) is kept; S Jmol (255,255,48) is kept.
Ball radius is 0.30 x the van der Waals radius (Bondi), as Jmol's ball-and-stick balls are a fraction of
it; the stick radius is one value for all bonds.
"""

from __future__ import annotations

import numpy as np

ELEMENTS: tuple[str, ...] = ("H", "C", "N", "O", "F", "S", "P", "Cl", "Br", "I")

COLORS: dict[str, tuple[int, int, int]] = {
    "H": (255, 255, 255),
    "C": (144, 144, 144),
    "N": (48, 80, 248),
    "O": (255, 13, 13),
    "F": (0, 230, 230),
    "S": (255, 255, 48),
    "P": (255, 128, 0),
    "Cl": (31, 240, 31),
    "Br": (150, 80, 0),
    "I": (148, 0, 148),
}

VDW_RADII: dict[str, float] = {
    "H": 1.20, "C": 1.70, "N": 1.55, "O": 1.52, "F": 1.47,
    "S": 1.80, "P": 1.80, "Cl": 1.75, "Br": 1.85, "I": 1.98,
}

COVALENT_RADII: dict[str, float] = {
    "H": 0.31, "C": 0.76, "N": 0.71, "O": 0.66, "F": 0.57,
    "S": 1.05, "P": 1.07, "Cl": 1.02, "Br": 1.20, "I": 1.39,
}

BALL_SCALE = 0.30
STICK_RADIUS = 0.09  # Å, thinner than a pixel-and-a-half so sticks never pass for balls


def ball_radius(element: str) -> float:
    """Depiction ball radius in Å."""
    return BALL_SCALE * VDW_RADII[element]


def palette() -> np.ndarray:
    """(len(ELEMENTS)+1, 3) float array: background black first, then ELEMENTS' colours in order."""
    return np.array([(0, 0, 0)] + [COLORS[e] for e in ELEMENTS], dtype=np.float32)


def formula_counts(formula: str) -> np.ndarray:
    """A Hill formula -> (len(ELEMENTS),) float32 atoms of each element, in ``ELEMENTS`` order.

    Examples:
        >>> formula_counts("C6HBrF4I").tolist()
        [1.0, 6.0, 0.0, 0.0, 4.0, 0.0, 0.0, 0.0, 1.0, 1.0]
    """
    import re

    if not re.fullmatch(r"(?:[A-Z][a-z]?\d*)+", formula or ""):
        raise ValueError(f"formula {formula!r}: not a formula (element symbols each with its count, e.g. C6H3BrCl2)")
    out = np.zeros(len(ELEMENTS), np.float32)
    for element, n in re.findall(r"([A-Z][a-z]?)(\d*)", formula or ""):
        if element not in ELEMENTS:
            raise ValueError(f"formula {formula!r}: {element} is not one of the model's elements {ELEMENTS}")
        out[ELEMENTS.index(element)] += int(n or 1)
    return out
