"""raypipe: identify molecules in HR-AFM scans (stacks -> ball-and-stick depictions -> graphs), on Ray.

Data flows one way: file -> ScanStack -> tensor -> depiction -> graph -> row.

Every public name loads its module on first use, so ``import raypipe`` is cheap and the parts that need
neither RDKit nor Ray (the model, its training loop) import on a machine that has only torch. Type checkers
and editors see the names through the ``TYPE_CHECKING`` imports below.

Examples:
    >>> import raypipe
    >>> stack = raypipe.load_stack(str(raypipe.resources.SAMPLE_SCANS) + "::" + raypipe.list_archive(
    ...     raypipe.resources.SAMPLE_SCANS)[0])
    >>> raypipe.preprocess(stack).shape
    (10, 128, 128)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from raypipe import resources
from raypipe.version import __version__

_LAZY = {
    # scans and formats
    "ScanStack": "raypipe.scans.stack", "load_stack": "raypipe.scans.formats", "preprocess": "raypipe.scans.preprocess",
    "list_archive": "raypipe.scans.archive", "read_archive": "raypipe.scans.archive",
    "write_archive": "raypipe.scans.archive", "ScanError": "raypipe.errors", "MoleculeError": "raypipe.errors",
    "DEFAULT_WINDOW": "raypipe.window", "Window": "raypipe.window",
    # molecules, depictions, graphs
    "Molecule": "raypipe.chem.molecule", "render_depiction": "raypipe.chem.depiction",
    "decode_png": "raypipe.chem.depiction", "encode_png": "raypipe.chem.depiction",
    "extract_graph": "raypipe.chem.graph", "GraphAtom": "raypipe.chem.graph", "MolGraph": "raypipe.chem.graph",
    "score": "raypipe.chem.scoring", "aggregate": "raypipe.chem.scoring", "Score": "raypipe.chem.scoring",
    # the model
    "load_model": "raypipe.model.inference", "ModelConfig": "raypipe.model.config",
    "read_prediction": "raypipe.model.reading",
    # identification
    "rank_candidates": "raypipe.identify.candidates",
    # training and evaluation
    "TrainConfig": "raypipe.training.run", "evaluate": "raypipe.training.evaluation",
    # pipelines on Ray, and the labels table
    "read_scans": "raypipe.pipelines.predict", "predict_dataset": "raypipe.pipelines.predict",
    "simulate_dataset": "raypipe.pipelines.simulate", "train": "raypipe.pipelines.train",
    "label_archive": "raypipe.labels.job", "LabelSettings": "raypipe.labels.job",
    "read_labels": "raypipe.labels.table", "export_labels": "raypipe.labels.table",
}

if TYPE_CHECKING:  # what the lazy names are, for type checkers and editors
    from raypipe.chem.depiction import decode_png, encode_png, render_depiction
    from raypipe.chem.graph import GraphAtom, MolGraph, extract_graph
    from raypipe.chem.molecule import Molecule
    from raypipe.chem.scoring import Score, aggregate, score
    from raypipe.errors import MoleculeError, ScanError
    from raypipe.identify.candidates import rank_candidates
    from raypipe.labels.job import LabelSettings, label_archive
    from raypipe.labels.table import export_labels, read_labels
    from raypipe.model.config import ModelConfig
    from raypipe.model.inference import load_model
    from raypipe.model.reading import read_prediction
    from raypipe.pipelines.predict import predict_dataset, read_scans
    from raypipe.pipelines.simulate import simulate_dataset
    from raypipe.pipelines.train import train
    from raypipe.scans.archive import list_archive, read_archive, write_archive
    from raypipe.scans.formats import load_stack
    from raypipe.scans.preprocess import preprocess
    from raypipe.scans.stack import ScanStack
    from raypipe.training.evaluation import evaluate
    from raypipe.training.run import TrainConfig
    from raypipe.window import DEFAULT_WINDOW, Window


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'raypipe' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = sorted([*_LAZY, "__version__", "resources"])
