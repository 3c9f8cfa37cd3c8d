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


def causes(exc: BaseException | None):
    """``exc`` and what caused it, outermost first: ``__cause__``/``__context__``, and the ``cause`` of Ray's
    task errors (each exception once).

    Examples:
        >>> try:
        ...     try:
        ...         raise OSError("disk")
        ...     except OSError as inner:
        ...         raise RuntimeError("write failed") from inner
        ... except RuntimeError as outer:
        ...     [str(e) for e in causes(outer)]
        ['write failed', 'disk']
    """
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__ or getattr(exc, "cause", None)
