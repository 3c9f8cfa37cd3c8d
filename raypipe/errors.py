"""Exceptions raised by raypipe for bad input."""


class ScanError(ValueError):
    """A scan file or folder cannot be read; the message names the path and the reason."""

    def __init__(self, path: object, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class MoleculeError(ValueError):
    """A molecule cannot be built or is outside what raypipe handles (elements, fragments, geometry)."""


class DepictionError(ValueError):
    """A depiction that graph extraction cannot read as one molecule (e.g. far more balls than any molecule
    in the window has: an untrained model's noise, or a model given scans unlike its training data)."""
