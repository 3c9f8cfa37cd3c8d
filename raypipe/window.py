"""The scan window: the square pixel grid shared by simulated scans, depictions and the model.

The window is centred on the molecule's bounding-box centre (x = y = 0 in molecule coordinates) and
viewed from the tip, as an image is displayed: column = x growing to the right, row 0 at the top
(largest y). Pixel centres sit at half-integers. The default, 18 Å on 128 pixels (0.14 Å per pixel),
holds every quasi-planar molecule of RDKit's ``first_5K.smi`` with its balls.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Window:
    """A square field of view of ``fov`` Å sampled on ``size`` x ``size`` pixels."""

    size: int = 128
    fov: float = 18.0

    @property
    def pixel(self) -> float:
        """Pixel edge in Å."""
        return self.fov / self.size

    def to_pixels(self, xy: np.ndarray) -> np.ndarray:
        """(N, 2) positions in Å -> (N, 2) continuous (col, row) pixel coordinates."""
        xy = np.asarray(xy, dtype=np.float64)
        half = self.fov / 2
        return np.stack([(xy[:, 0] + half) / self.pixel, (half - xy[:, 1]) / self.pixel], axis=1)

    def to_angstrom(self, colrow: np.ndarray) -> np.ndarray:
        """(N, 2) continuous (col, row) pixel coordinates -> (N, 2) positions in Å."""
        colrow = np.asarray(colrow, dtype=np.float64)
        half = self.fov / 2
        return np.stack([colrow[:, 0] * self.pixel - half, half - colrow[:, 1] * self.pixel], axis=1)


DEFAULT_WINDOW = Window()
