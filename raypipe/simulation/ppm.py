"""Probe-Particle-Model AFM stacks of a molecule with ppafm's OpenCL ``AFMulator``.

Geometry (all in Å, molecule coordinates of :class:`raypipe.Molecule`: top atom at z = 0, bounding box
centred on x = y = 0):
- x-y: the scan grid is the project window, one scan point per pixel centre, so a simulated image and
  the molecule's depiction are pixel-aligned;
- z: images are ``Z_STEP`` = 0.1 Å apart; the frequency shift of each image comes from an oscillation
  of ``amplitude`` Å (peak to peak, ppafm's convention) whose lower turning point is the image's height.
  ``distance`` is the tip (metal apex) height of the lowest turning point of the closest image above the
  top atom. The probe particle (CO oxygen) hangs ``tipR0`` = 3 Å below the apex, so the default of
  6.0 Å puts it ~3 Å above the top atom at rest: the closest images are in the repulsive regime with
  sharp bond contrast, the farthest (0.9 Å higher) are mostly attractive, as in QUAM-AFM's stacks
  (5.6 Å gave saturated, distorted closest images on PTCDA; 6.5 Å showed bonds only in the first).
- ``distance_jitter`` (Å, a multiple of ``Z_STEP``): experiments never stop at the same height, so each
  stack may start up to that much closer or farther. The scan covers the whole jitter range once per
  molecule and force field; a stack is the 10 consecutive images at its offset (no extra force field).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from raypipe.chem.molecule import Molecule
from raypipe.scans.stack import ScanStack
from raypipe.window import DEFAULT_WINDOW, Window

Z_STEP = 0.1
MAX_DF_STEPS = 14  # amplitudes up to 1.4 Å
ATOMIC_NUMBERS = {"H": 1, "C": 6, "N": 7, "O": 8, "F": 9, "P": 15, "S": 16, "Cl": 17, "Br": 35, "I": 53}


@dataclass(frozen=True)
class SimulationSettings:
    """Tip and scan settings shared by every stack (amplitude and stiffness vary per stack)."""

    n_images: int = 10
    distance: float = 6.0
    pix_per_angstrom: int = 10  # force-field grid density
    tip_charge: float = -0.05  # dz2 quadrupole of the CO tip, e
    window: Window = DEFAULT_WINDOW
    distance_jitter: float = 0.0  # Å, each stack's closest height drawn from distance ± this, in Z_STEP steps

    @property
    def jitter_steps(self) -> int:
        steps = int(round(self.distance_jitter / Z_STEP))
        if steps < 0 or abs(steps * Z_STEP - self.distance_jitter) > 1e-6:
            raise ValueError(f"distance_jitter {self.distance_jitter} Å must be a non-negative multiple of {Z_STEP} Å")
        return steps


class Simulator:
    """One ppafm AFMulator, initialised once (OpenCL context, kernels) and reused for many stacks."""

    def __init__(self, settings: SimulationSettings | None = None) -> None:
        from ppafm.ocl import AFMulator as afm_module  # OpenCL starts here, not at import of raypipe
        from ppafm.ocl import oclUtils

        # pyopencl warns on every kernel lookup ppafm makes per call; harmless, and noisy
        warnings.filterwarnings("ignore", message="Kernel '.*' has been retrieved more than once")
        self.settings = settings or SimulationSettings()
        if not afm_module.FFcl.oclu:
            oclUtils.init_env(i_platform=0)
        w = self.settings.window
        half = w.fov / 2 - w.pixel / 2  # scan points on the pixel centres
        q = self.settings.tip_charge
        self._jitter = self.settings.jitter_steps
        self._n_z = self.settings.n_images + MAX_DF_STEPS - 1 + 2 * self._jitter
        self._afm = afm_module.AFMulator(
            pixPerAngstrome=self.settings.pix_per_angstrom,
            scan_dim=(w.size, w.size, self._n_z),
            scan_window=((-half, -half, 0.0), (half, half, self._n_z * Z_STEP)),
            iZPP=8,
            QZs=[0.1, 0.0, -0.1, 0.0],
            Qs=[100 * q, -200 * q, 100 * q, 0.0],
            df_steps=MAX_DF_STEPS,
            tipR0=[0.0, 0.0, 3.0],
            npbc=(0, 0, 0),
        )

    def simulate(self, molecule: Molecule, parameter_sets: list[tuple[float, float]],
                 offsets: list[int] | None = None) -> list[ScanStack]:
        """Stacks of ``n_images`` Δf images (Hz), closest first, one per (amplitude Å, stiffness N/m).

        ``offsets``: per parameter set, the closest image's shift in ``Z_STEP`` steps within
        ±``settings.jitter_steps`` (default 0: every stack at ``settings.distance``); the stack's
        ``metadata["distance"]`` is its own.

        The force field depends only on the molecule: it is computed once, and each parameter set
        only relaxes the probe and converts forces to frequency shifts (most of the time is the force
        field; see bench/bench_simulation.py).
        """
        s = self.settings
        steps = [_df_steps(amplitude) for amplitude, _ in parameter_sets]
        offsets = list(offsets) if offsets is not None else [0] * len(parameter_sets)
        if len(offsets) != len(parameter_sets) or any(abs(o) > self._jitter for o in offsets):
            raise ValueError(f"offsets {offsets}: one per parameter set, within ±{self._jitter} steps")
        lowest = s.distance - self._jitter * Z_STEP
        xyz = molecule.positions.copy()
        xyz[:, 2] -= xyz[:, 2].max() + lowest  # the scan's lowest turning point is z = 0
        zs = np.array([ATOMIC_NUMBERS[e] for e in molecule.elements], dtype=np.int32)
        self._afm.prepareFF(xyz.astype(np.float32), zs, molecule.charges.astype(np.float32))
        stacks = []
        for (amplitude, stiffness), df_steps, offset in zip(parameter_sets, steps, offsets):
            self._afm.setStiffness([stiffness, stiffness, 0.0, 30.0])
            self._afm.setScanWindow(df_steps=df_steps)
            self._afm.prepareScanner()
            x = self._afm.evalAFM()
            # ppafm: (x, y, z) with the closest image last; raypipe: (z closest first, row = top = max y, col)
            first = self._jitter + offset
            images = np.ascontiguousarray(np.transpose(x[:, ::-1, ::-1], (2, 1, 0))[first: first + s.n_images])
            metadata = {
                "name": molecule.name or "sim", "format": "ppafm", "mode": "FM df", "fov": [s.window.fov] * 2,
                "amplitude": amplitude, "stiffness": stiffness, "distance": round(lowest + first * Z_STEP, 6),
                "smiles": molecule.smiles,
            }
            stacks.append(ScanStack(images, np.arange(s.n_images) * Z_STEP, metadata))
        return stacks


def _df_steps(amplitude: float) -> int:
    df_steps = int(round(amplitude / Z_STEP))
    if not 1 <= df_steps <= MAX_DF_STEPS:
        raise ValueError(f"amplitude {amplitude} Å outside the supported {Z_STEP}-{MAX_DF_STEPS * Z_STEP} Å")
    return df_steps
