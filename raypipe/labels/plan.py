"""What one labelling run does: the scan units sorted into new, to replace, unchanged and still arriving,
from the table's record of what is done (:func:`raypipe.labels.table.done_units`)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from raypipe.storage import redact

RELABEL = (None, "all", "stale")


@dataclass
class RunPlan:
    """Units to label (``new``), to replace (changed, relabelled, retried), skipped (``unchanged``) and left
    for the next run (``arriving``: a file younger than the settle time)."""

    new: list = field(default_factory=list)
    replace: list = field(default_factory=list)
    unchanged: int = 0
    arriving: list = field(default_factory=list)

    @property
    def todo(self) -> list:
        return self.new + self.replace


def plan_run(units, done: dict[str, dict], *, settle: float, relabel: str | None, retry_errors: bool,
             model: str, now: float | None = None) -> RunPlan:
    """Sort ``units`` (ScanUnits) against ``done`` (unit URI -> its record in the table): **new** (never
    labelled), **replace** (another fingerprint; a row failed for a reason that may pass, or any error with
    ``retry_errors``; ``relabel="all"``, or ``"stale"``: labelled by another ``model`` tag), **unchanged**,
    and **arriving** (its newest file younger than ``settle`` seconds).

    Examples:
        >>> from raypipe.scans.units import ScanUnit
        >>> units = [ScanUnit("a.h5", "raypipe-hdf5", "f1", newest=0), ScanUnit("b.h5", "raypipe-hdf5", "f2", newest=0)]
        >>> done = {"a.h5": {"fingerprint": "f1", "transient": False, "errors": False, "models": {"m@1"}}}
        >>> plan = plan_run(units, done, settle=60, relabel=None, retry_errors=False, model="m@1", now=1000)
        >>> [u.uri for u in plan.new], plan.unchanged
        (['b.h5'], 1)
    """
    now = time.time() if now is None else now
    plan = RunPlan()
    for unit in units:
        if settle and now - unit.newest < settle:
            plan.arriving.append(unit)
            continue
        entry = done.get(redact(unit.uri))
        if entry is None:
            plan.new.append(unit)
        elif (entry["fingerprint"] != unit.fingerprint or entry["transient"] or (retry_errors and entry["errors"])
              or relabel == "all" or (relabel == "stale" and entry["models"] != {model})):
            plan.replace.append(unit)
        else:
            plan.unchanged += 1
    return plan
