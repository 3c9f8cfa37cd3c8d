"""raypipe: identify molecules in HR-AFM scans (stacks -> ball-and-stick depictions -> graphs).

Data flows one way: file -> ScanStack -> tensor -> depiction -> graph -> row.

Every public name loads its module on first use, so ``import raypipe`` is cheap and the parts that need
neither RDKit nor Ray (the model, its training loop) import on a machine that has only torch.
"""

from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("raypipe")
except PackageNotFoundError:  # a source tree that was not installed
    __version__ = "0+unknown"

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
    # pipelines (Ray), model, evaluation
    "read_scans": "raypipe.pipelines.predict", "predict_dataset": "raypipe.pipelines.predict",
    "label_archive": "raypipe.pipelines.label", "read_labels": "raypipe.pipelines.table",
    "export_labels": "raypipe.pipelines.table",
    "simulate_dataset": "raypipe.pipelines.simulate", "train": "raypipe.pipelines.train",
    "TrainConfig": "raypipe.model.run", "evaluate": "raypipe.evaluation",
    "load_model": "raypipe.model.inference", "ModelConfig": "raypipe.model.config",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'raypipe' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = sorted(_LAZY)
