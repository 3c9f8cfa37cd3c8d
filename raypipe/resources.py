"""What the package ships besides code: the trained model's weights and the example data, found inside the
installed package (``pip install`` carries them as package data), so commands and tests run anywhere.

Examples:
    >>> from raypipe.resources import SAMPLE_SCANS, SHIPPED_MODEL
    >>> SAMPLE_SCANS.is_file(), SHIPPED_MODEL.suffix
    (True, '.safetensors')
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
WEIGHTS = HERE / "weights"
SHIPPED_MODEL = WEIGHTS / "raypipe-small.safetensors"  # the model ``load_model()`` loads by default
EXAMPLES = HERE / "examples"
EXAMPLE_SCANS = EXAMPLES / "scans"  # what ``raypipe label`` reads by default: an HDF5 archive and a PNG folder
SAMPLE_SCANS = EXAMPLE_SCANS / "sample_scans.h5"
SAMPLE_SIM = EXAMPLES / "sim-sample"  # a small simulated data set (shards of 2 molecules x 3 parameter sets)
EXAMPLE_MOLECULES = EXAMPLES / "molecules.smi"
