"""raypipe: identify molecules in HR-AFM scans (stacks -> ball-and-stick depictions -> graphs).

Data flows one way: file -> ScanStack -> tensor -> depiction -> graph -> row.
"""

from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("raypipe")
except PackageNotFoundError:  # a source tree that was not installed
    __version__ = "0+unknown"

from raypipe.chem.depiction import decode_png, encode_png, render_depiction
from raypipe.chem.graph import GraphAtom, MolGraph, extract_graph
from raypipe.chem.molecule import Molecule
from raypipe.chem.scoring import Score, aggregate, score
from raypipe.errors import MoleculeError, ScanError
from raypipe.scans.archive import list_archive, read_archive, write_archive
from raypipe.scans.load import load_stack
from raypipe.scans.preprocess import preprocess
from raypipe.scans.stack import ScanStack
from raypipe.window import DEFAULT_WINDOW, Window

# Ray, torch and ppafm load only when one of these is first used
_LAZY = {
    "read_scans": "raypipe.pipelines.predict", "predict_dataset": "raypipe.pipelines.predict",
    "label_archive": "raypipe.pipelines.label", "read_labels": "raypipe.pipelines.table",
    "export_labels": "raypipe.pipelines.table",
    "simulate_dataset": "raypipe.pipelines.simulate", "train": "raypipe.pipelines.train",
    "TrainConfig": "raypipe.pipelines.train", "evaluate": "raypipe.evaluation",
    "load_model": "raypipe.model.inference", "ModelConfig": "raypipe.model.config",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'raypipe' has no attribute {name!r}")


__all__ = [*_LAZY,
    "DEFAULT_WINDOW", "GraphAtom", "MolGraph", "Molecule", "MoleculeError", "ScanError", "ScanStack",
    "Score", "Window", "aggregate", "decode_png", "encode_png", "extract_graph", "list_archive",
    "load_stack", "preprocess", "read_archive", "render_depiction", "score", "write_archive",
]
