"""Identification: which known molecule of a library does a scan show? Two stages, separable, their scores
kept in the result:

1. **filter** (:func:`filter_scores`), vectorised over the whole library: the model's reading of the scan
   (its heavy atoms' layout as pair distances, with and without elements, its heavy-atom counts and the
   skeleton fingerprint of its graph) and what the scan itself shows, model free (:func:`scan_shape`: the
   molecule's spread along its long and short axes in the farther slices, in Å where the field of view is
   known, else their ratio), mixed by a fit on validation stacks (``FILTER``: a linear mix and a small
   hidden layer, monotone in each feature), the reading's features once as they are and once scaled by the
   reading's confidence; then the **depiction screen**
   (:func:`screen`) of the filter's best ``SCREEN``: each molecule's conformer drawn and matched against the
   predicted depiction, no simulation, keeping the filter's best ``SCREEN_RESERVE`` and the best depictions
   up to the shortlist (:func:`shortlist_screened`: both);
2. **match** (:func:`raypipe.identify.candidates.rank`) on the shortlist: the predicted depiction
   against each candidate's, and the measured stack against each candidate's ppafm simulation, made on demand
   and kept in the library's cache.

The final score is the match's (``WEIGHTS``: the mean of its two scores, as in candidate ranking); the
filter's probability is kept beside it and breaks ties. ``identify`` is the Python entry
point for one scan; the labelling pipeline runs the same per row (``identified`` column).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from importlib import resources

import numpy as np
from scipy import ndimage

from raypipe.chem.agreement import ElementCounts
from raypipe.chem.elements import ELEMENTS
from raypipe.identify.defaults import SCREEN, SCREEN_RESERVE, SHORTLIST, TOP
from raypipe.identify.library import FP_BITS, Library, pair_distances, skeleton_fingerprint, skeleton_layout
from raypipe.window import Window

# the scan's spread along each axis against the conformer's: scan ~ a x conformer + b, with the residual's
# standard deviation (Å); fitted on simulated validation stacks (docs/identification.md)
SHAPE_FIT = ((0.82, 0.48, 0.27), (0.50, 0.99, 0.21))
ASPECT_SIGMA = 0.25  # of log(long / short spread) where only the ratio is known
# stage 1's linear mix of its features (filter_features), fitted on the shipped model's readings of simulated
# validation stacks by ``bench/tune_filter.py --fit`` (a conditional logit over the library); its file says
# on what, and the figures of the fit
FILTER = json.loads((resources.files("raypipe.identify") / "filter.json").read_text())
# the final score's mix: the match's two scores alone. With the fitted filter in the mix (0.25 of it, its
# probability relative to the shortlist's best) the truth was first for 12 of 18 validation scans whose
# shortlist held it, without it for 17 (docs/identification.md)
WEIGHTS = {"simulation": 0.5, "depiction": 0.5}
# elements a reading confuses (chlorine read as bromine, oxygen as nitrogen: the field reports O/F and NH/O),
# whose summed count differences the filter weighs beside each element's
GROUPS = {"halogen": ("F", "Cl", "Br", "I"), "NO": ("N", "O"), "hetero": ("N", "O", "F", "S", "P", "Cl", "Br", "I")}
CONFIDENT = "_confident"  # the suffix of a reading feature scaled by the reading's confidence
LIBRARY_CONFORMERS = 1  # conformers a library molecule is simulated as (a short candidate list: 3)
# a reading this unsure of a scan whose scale is unknown leaves a library's ranking to a wrong reading and the
# scan's aspect: on the real stacks we hold (confidence 0.0004-0.0013, no scale) the truth was never in the
# top 5 of 7,472, so the report says so and points to a candidate list (docs/identification.md, "Real scans")
UNSURE = 0.01


def scan_region(x: np.ndarray, margin: int = 3) -> tuple[int, int, int, int]:
    """(row0, row1, col0, col1): the part of a preprocessed stack (n_slices, S, S) that is the scan itself,
    without the constant padding preprocessing puts around a scan smaller than the window or not square
    (:func:`raypipe.scans.preprocess.centre_on`), less ``margin`` pixels where resizing blends the two.

    Examples:
        >>> x = np.zeros((10, 128, 128), np.float32)
        >>> x[:, :, 30:98] = np.random.default_rng(0).normal(size=(10, 128, 68))
        >>> scan_region(x)
        (0, 128, 33, 95)
    """
    varies_r = np.ptp(x, axis=(0, 2)) > 1e-5
    varies_c = np.ptp(x, axis=(0, 1)) > 1e-5
    if not varies_r.any():
        return 0, x.shape[1], 0, x.shape[2]
    rows, cols = np.flatnonzero(varies_r), np.flatnonzero(varies_c)
    inset = lambda lo, hi, n: (lo + margin if lo > 0 else 0, hi - margin if hi < n else n)  # noqa: E731
    r0, r1 = inset(int(rows[0]), int(rows[-1]) + 1, x.shape[1])
    c0, c1 = inset(int(cols[0]), int(cols[-1]) + 1, x.shape[2])
    return r0, r1, c0, c1


def scan_shape(x: np.ndarray, window: Window) -> tuple[float, float]:
    """(long, short) spread in Å of the molecule in a preprocessed stack (n_slices, S, S) on ``window``: the
    standard deviations along the principal axes of its footprint in the farther half of the slices (where
    the attractive halo outlines the whole molecule), model free."""
    r0, r1, c0, c1 = scan_region(x)
    far = x[len(x) // 2:].mean(axis=0)
    own = far[r0:r1, c0:c1]  # the background is the scan's own rim, never the padding around it
    if min(own.shape) < 16:
        return 0.0, 0.0
    border = np.concatenate([own[:8].ravel(), own[-8:].ravel(), own[:, :8].ravel(), own[:, -8:].ravel()])
    d = ndimage.gaussian_filter(np.abs(far - np.median(border)), 2)
    d[:r0], d[r1:], d[:, :c0], d[:, c1:] = 0, 0, 0, 0
    if d.max() <= 0:
        return 0.0, 0.0
    mask = d > 0.3 * d.max()
    labels, n = ndimage.label(mask)
    if n > 1:
        mask = labels == 1 + int(np.argmax(ndimage.sum(mask, labels, range(1, n + 1))))
    w = d * mask
    yy, xx = np.mgrid[: w.shape[0], : w.shape[1]]
    total = w.sum()
    cx, cy = (w * xx).sum() / total, (w * yy).sum() / total
    cov = np.array([[(w * (xx - cx) ** 2).sum(), (w * (xx - cx) * (yy - cy)).sum()],
                    [(w * (xx - cx) * (yy - cy)).sum(), (w * (yy - cy) ** 2).sum()]]) / total
    long, short = np.sqrt(np.clip(np.sort(np.linalg.eigvalsh(cov))[::-1], 0, None)) * window.pixel
    return float(long), float(short)


@dataclass
class Query:
    """What stage 1 compares the library with: the reading's element counts (ELEMENTS order) and skeleton
    fingerprint, its confidence, and the scan's spreads (Å) with whether its scale is known."""

    counts: np.ndarray
    fingerprint: np.ndarray  # (FP_BITS // 64,) uint64
    distances: np.ndarray  # the reading's pair-distance histogram (raypipe.identify.library.pair_distances)
    confidence: float
    spread: tuple[float, float]
    scale_known: bool

    @classmethod
    def of(cls, graph, confidence: float | None, x: np.ndarray, window: Window, scale_known: bool) -> "Query":
        from raypipe.chem.elements import ELEMENTS

        elements = [a.element for a in graph.atoms]
        counts = np.array([elements.count(e) for e in ELEMENTS], np.float32)
        fp = np.packbits(skeleton_fingerprint(elements, list(graph.bonds))).view(np.uint64)
        spread = scan_shape(x, window) if x is not None else (0.0, 0.0)  # no stack: the reading alone
        return cls(counts, fp, pair_distances(elements, graph.positions), float(confidence or 0.0), spread,
                   scale_known)


def filter_features(library: Library, query: Query) -> dict[str, np.ndarray]:
    """Every feature of stage 1 for every library molecule against the query (named in ``FILTER["weights"]``):
    similarities (log cosine of the pair-distance layouts, with and without elements; log Tanimoto of the
    skeleton fingerprints and the share of the reading's and of the molecule's bits they have in common;
    log composition likelihood; log shape likelihood) and differences (heavy atoms, each heavy element, and
    each group of elements a reading confuses, ``GROUPS``), relative to the reading's heavy-atom count;
    each of the reading's features again times the reading's confidence (``<name>_confident``), so that the
    fitted mix weighs a reading by how sure the model is of it (a wrong reading of a real scan has a
    confidence near 0) and the scan's shape does not depend on it."""
    eps = 1e-3
    heavy = library.counts[:, 1:].astype(np.float32)
    q = query.counts[1:]
    size = max(float(q.sum()), 1.0)
    distance = np.abs(heavy - q).sum(axis=1) / np.maximum(np.maximum(heavy.sum(axis=1), q.sum()), 1.0)
    both = np.bitwise_count(library.fingerprints & query.fingerprint).sum(axis=1).astype(np.float32)
    mine = float(np.bitwise_count(query.fingerprint).sum())
    theirs = library.fingerprint_bits
    skeleton = skeleton_layout(query.distances[None])[0]
    long, short = query.spread
    if long <= 0:
        shape = np.ones(len(library))
    elif query.scale_known:
        z = sum(((value - (a * library.spread[:, k] + b)) / sd) ** 2
                for k, (value, (a, b, sd)) in enumerate(zip((long, short), SHAPE_FIT)))
        shape = np.exp(-0.5 * z)
    else:
        predicted = [a * library.spread[:, k] + b for k, (a, b, _) in enumerate(SHAPE_FIT)]
        shape = np.exp(-0.5 * (np.log(long / max(short, 1e-6)) - np.log(predicted[0] / predicted[1])) ** 2
                       / ASPECT_SIGMA**2)
    dh = (heavy.sum(axis=1) - size) / size
    out = {"layout": np.log(np.clip(library.distances @ query.distances, 0.0, 1.0) + eps),
           "layout_skeleton": np.log(np.clip(library.skeleton_layouts @ skeleton, 0.0, 1.0) + eps),
           "graph": np.log(both / np.maximum(mine + theirs - both, 1.0) + eps),
           "graph_of_reading": both / max(mine, 1.0), "graph_of_molecule": both / np.maximum(theirs, 1.0),
           "composition": np.log(np.exp(-distance / 0.15) + eps), "shape": np.log(shape + eps),
           "heavy_difference": np.abs(dh), "heavy_excess": np.maximum(dh, 0.0), "heavy_difference_sq": dh**2}
    for k, element in enumerate(ELEMENTS[1:]):
        out[f"{element}_difference"] = np.abs(heavy[:, k] - q[k]) / size
    for group, members in GROUPS.items():  # elements the model confuses, counted together
        k = [ELEMENTS.index(e) - 1 for e in members]
        out[f"{group}_difference"] = np.abs(heavy[:, k].sum(axis=1) - q[k].sum()) / size
    # the same of the reading again, scaled by its confidence: the fit weighs a confident reading more
    for name in [n for n in out if n != "shape"]:
        out[f"{name}{CONFIDENT}"] = out[name] * query.confidence
    return out


def filter_scores(library: Library, query: Query, weights: dict | None = None) -> dict[str, np.ndarray]:
    """Stage 1 over every library molecule: the features (:func:`filter_features`), ``logit`` (their
    linear mix with ``FILTER["weights"]`` plus the fit's small hidden layer ``FILTER["hidden"]``, monotone in
    each feature, both fitted by ``bench/tune_filter.py --fit``; ``weights`` given: that linear mix alone)
    and ``score``, the
    probability of each molecule given the reading and the scan (a softmax over the library: sums to 1).
    A reading of no heavy atom says nothing of the molecule: then the scan's shape alone ranks."""
    hidden = FILTER.get("hidden") if weights is None else None
    weights = FILTER["weights"] if weights is None else weights
    if not query.counts[1:].any():
        weights, hidden = {name: w for name, w in weights.items() if name == "shape"}, None
    features = filter_features(library, query)
    logit = sum((w * features[name] for name, w in weights.items()), np.zeros(len(library)))
    if hidden:  # the fit's monotone hidden layer: softplus units of the standardised features, summed >= 0
        weight = np.asarray(hidden["weight"]) / np.asarray(hidden["scale"])[:, None]  # standardising folded in
        bias = np.asarray(hidden["bias"]) - np.asarray(hidden["centre"]) @ weight
        z = np.stack([features[n] for n in hidden["features"]], axis=1, dtype=np.float32)
        units = z @ weight.astype(np.float32) + bias.astype(np.float32)
        logit = logit + np.logaddexp(0.0, units) @ np.asarray(hidden["out"], np.float32)
    p = np.exp(logit - logit.max())
    return {**features, "logit": logit, "score": p / p.sum()}


def shortlist(library: Library, query: Query, k: int = SHORTLIST) -> tuple[np.ndarray, np.ndarray]:
    """(indices of the ``k`` best library molecules by stage 1, best first; every molecule's filter score)."""
    scores = filter_scores(library, query)
    logit = scores["logit"]  # ranks where the probabilities of the far ones underflow to 0
    k = min(k, len(logit))
    best = np.argpartition(-logit, k - 1)[:k]
    return best[np.argsort(-logit[best], kind="stable")], scores["score"]


def screen(library: Library, indices: np.ndarray, depiction: np.ndarray, cache, keep: int = SHORTLIST,
           reserve: int = SCREEN_RESERVE) -> tuple[np.ndarray, dict[str, float]]:
    """Stage 1's longer list ``indices`` (best first) cut to ``keep``: the filter's ``reserve`` best, then
    those whose conformer's depiction best matches the predicted ``depiction``
    (:func:`raypipe.identify.candidates.depiction_score`: no simulation, a conformer and a drawing per
    molecule); ties keep the filter's order, and a depiction of no atom the filter's best ``keep`` (nothing
    drawn). Returns those indices (the
    reserved first, then by depiction score) and each screened molecule's depiction score by canonical
    SMILES (reused by :func:`match`). A molecule that cannot be used (no conformer) is dropped."""
    from raypipe.chem.pixels import classify_pixels
    from raypipe.identify.candidates import depiction_score

    if not (classify_pixels(depiction[..., :3]) > 0).any():  # a depiction of no atom says nothing: no drawing
        return np.asarray(indices[:keep], dtype=np.int64), {}
    scored, seen, scores = [], set(), {}
    for order, i in enumerate(indices):
        candidate = cache.get(str(library.smiles[i]))
        if candidate is None or candidate.smiles in seen:
            continue
        seen.add(candidate.smiles)
        scores[candidate.smiles] = float(depiction_score(depiction, candidate))
        scored.append((-scores[candidate.smiles], order, i))
    reserve = min(reserve, keep)
    chosen = scored[:reserve] + sorted(scored[reserve:])[: keep - len(scored[:reserve])]
    return np.array([i for *_, i in chosen], dtype=np.int64), scores


def shortlist_screened(library: Library, query: Query, depiction: np.ndarray, cache, k: int = SHORTLIST,
                       depth: int = SCREEN) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """Stage 1 whole: the filter's best ``depth`` (:func:`shortlist`) screened down to ``k`` by the depiction
    match (:func:`screen`); where ``depth`` <= ``k``, the filter's best ``k`` as they are. Returns the
    shortlist, every molecule's filter score and the depiction scores computed on the way."""
    indices, scores = shortlist(library, query, max(k, depth))
    if depth <= k:
        return indices, scores, {}
    kept, screened = screen(library, indices, depiction, cache, k)
    return kept, scores, screened


def probability_text(p: float) -> str:
    """A filter probability as a person reads it.

    Examples:
        >>> probability_text(1.0), probability_text(0.0312), probability_text(5.7e-21)
        ('1.00', '0.031', '<0.001')
    """
    return "<0.001" if p < 0.001 else f"{p:.2f}" if p >= 0.1 else f"{p:.3f}"


def match(library: Library, indices: np.ndarray, filter_score: np.ndarray, depiction: np.ndarray, x: np.ndarray,
          cache, top: int = TOP, simulate: bool = True, depiction_scores: dict[str, float] | None = None) -> list[dict]:
    """Stage 2 on the shortlist ``indices``: the depiction and simulation match of each, mixed into
    ``score`` (``WEIGHTS``); the ``top`` best as dicts (smiles, name, score, filter_score: stage 1's
    probability of the molecule over the whole library, simulation_score, depiction_score, rank).
    ``depiction_scores``: those :func:`screen` computed already, by canonical SMILES."""
    from raypipe.identify.candidates import depiction_score, simulation_score

    rows, seen = [], set()
    for i in indices:
        if library.smiles[i] in seen:  # a molecule listed twice in a library is matched once
            continue
        seen.add(library.smiles[i])
        candidate = cache.get(str(library.smiles[i]))
        if candidate is None:
            continue
        known = (depiction_scores or {}).get(candidate.smiles)
        dep = known if known is not None else float(depiction_score(depiction, candidate))
        sim = float(simulation_score(x, candidate, cache)) if simulate else 0.0
        fil = float(filter_score[i])
        score = WEIGHTS["simulation"] * sim + WEIGHTS["depiction"] * dep if simulate else dep
        rows.append({"smiles": str(library.smiles[i]), "name": str(library.names[i]), "score": score,
                     "filter_score": fil, "simulation_score": sim if simulate else None, "depiction_score": dep})
    rows.sort(key=lambda r: (-r["score"], -r["filter_score"]))
    for k, row in enumerate(rows, start=1):
        row["rank"] = k
    return rows[:top]


def identify(stack, library: Library | str, *, model=None, top: int = TOP, shortlist_size: int = SHORTLIST,
             screen_size: int = SCREEN, cache=None, storage_options=None) -> list[dict]:
    """The ``top`` library molecules most likely shown by one scan, best first (module docs): dicts of
    ``smiles``, ``name``, ``score``, ``filter_score``, ``simulation_score``, ``depiction_score``, ``rank``.

    ``stack``: a :class:`raypipe.ScanStack` (preprocessed for the model here) or a preprocessed array;
    ``library``: a :class:`Library` or its URI; ``model``: a loaded model or a model file (default: the
    shipped one); ``screen_size``: how many of the filter's best the depiction screen looks at to keep
    ``shortlist_size`` (:func:`screen`; ``shortlist_size`` or less: no screen)."""
    return _identify(stack, library, model=model, top=top, shortlist_size=shortlist_size, screen_size=screen_size,
                     cache=cache, storage_options=storage_options).matches


@dataclass
class Identification:
    """One scan identified: the reading, the matches, and what it cost."""

    scan: str
    formula: str
    confidence: float | None
    fov: list[float] | None
    fov_source: str
    matches: list[dict]
    depiction: np.ndarray  # the predicted depiction
    input: np.ndarray  # the preprocessed stack
    seconds: float
    simulated: int
    library: str
    shortlist: list[str] = field(default_factory=list)
    scale_known: bool = True  # the scan's field of view came with it (not assumed or estimated)

    def report(self) -> str:
        conf = "?" if self.confidence is None else f"{self.confidence:.2f}"
        lines = [f"identify: {self.scan}: read as {self.formula or '(nothing)'} (confidence {conf}); "
                 f"{len(self.matches)} best of {self.library} in {self.seconds:.1f} s ({self.simulated} simulated)"]
        for m in self.matches:
            sim = "-" if m["simulation_score"] is None else f"{m['simulation_score']:.2f}"
            lines.append(f"  {m['rank']}. {m['name']}  {m['smiles']}  score {m['score']:.2f} (simulation {sim}, "
                         f"depiction {m['depiction_score']:.2f}, filter p {probability_text(m['filter_score'])})")
        if self.unreliable:
            lines.append(f"  note: the reading is unsure (confidence {self.confidence or 0:.4f}) and the scan's scale "
                         "unknown: such a ranking rarely holds the molecule (real stacks: 0 of 3 in the top 5 of "
                         "7,472); give the few molecules it may be with --candidates, which the simulation match "
                         "ranks without the model")
        return "\n".join(lines)

    @property
    def unreliable(self) -> bool:
        """A library ranking (not a candidate list) of a scan of unknown scale read with confidence below
        ``UNSURE``: what the report warns of."""
        return self.library != "the candidates" and not self.scale_known and (self.confidence or 0.0) < UNSURE

    def as_dict(self) -> dict:
        return {"scan": self.scan, "formula": self.formula, "confidence": self.confidence, "fov": self.fov,
                "fov_source": self.fov_source, "matches": self.matches, "seconds": self.seconds,
                "simulated": self.simulated, "library": self.library}


def _identify(stack, library, *, model=None, top=TOP, shortlist_size=SHORTLIST, screen_size=SCREEN, cache=None,
              storage_options=None, scan: str = "", fov_source: str = "") -> Identification:
    from raypipe.identify.candidates import CandidateCache
    from raypipe.model.inference import Model, load_model
    from raypipe.model.reading import read_one
    from raypipe.scans.preprocess import preprocess

    start = time.perf_counter()
    model = model if isinstance(model, Model) else load_model(model)
    window = model.config.window
    if not isinstance(library, Library):
        library = Library.open(str(library), storage_options, window=window)
    elif (library.window.size, library.window.fov) != (window.size, window.fov):
        raise ValueError(f"the library was built for a {library.window.fov:g} Å / {library.window.size} px window, "
                         f"the model reads {window.fov:g} Å / {window.size} px")
    scale_known = True
    fov = known = None
    if isinstance(stack, np.ndarray):
        x = stack
    else:
        known = stack.metadata.get("formula")  # a sidecar's: the reading agrees with it
        fov = stack.metadata.get("fov")
        scale_known = bool(fov)
        fov_source = fov_source or stack.metadata.get("fov_source") or ("file" if fov else "unknown")
        x = preprocess(stack, n_slices=model.config.n_slices, window=window)
    prediction = model.infer(x[None])
    reading = read_one(prediction.depictions[0], window, centres=prediction.centre_map(0),
                       margins=prediction.margin_stats(0), calibration=model.calibration,
                       counts=prediction.count_of(0), known=ElementCounts.known(known) if known else None)
    query = Query.of(reading.graph, reading.confidence, x, window, scale_known)
    cache = cache or CandidateCache(window, library.cache_uri if library.uri else None,
                                    storage_options=library.storage_options or storage_options,
                                    conformers=LIBRARY_CONFORMERS if library.uri else 3)
    indices, scores, screened = shortlist_screened(library, query, prediction.depictions[0], cache, shortlist_size,
                                                   screen_size)
    before = cache.simulated
    matches = match(library, indices, scores, prediction.depictions[0], x, cache, top=top,
                    depiction_scores=screened)
    return Identification(scan, reading.formula, reading.confidence, list(fov) if fov else None,
                          fov_source or "unknown", matches, prediction.depictions[0], x, time.perf_counter() - start,
                          cache.simulated - before, library.uri or "the candidates",
                          [str(library.smiles[i]) for i in indices], scale_known)


def identify_scan(source: str, *, library: str | None = None, candidates: str | None = None, top: int = TOP,
                  shortlist: int = SHORTLIST, screen_size: int = SCREEN, model=None, fov=None, storage_options=None,
                  progress=print) -> Identification:
    """``raypipe identify``: one scan file or folder against a library (or a candidates file)."""
    from raypipe.identify.candidates import read_candidate_names
    from raypipe.scans.units import load_source

    stack = load_source(source, storage_options, fov)
    if candidates is not None:
        smiles, names = read_candidate_names(candidates)
        progress(f"identify: {len(smiles)} candidates from {candidates}")
        lib = Library.from_smiles(smiles, names)
    else:
        lib = Library.open(library, storage_options)
        progress(f"identify: library {library}: {len(lib)} molecules")
    return _identify(stack, lib, model=model, top=top, shortlist_size=shortlist, screen_size=screen_size,
                     storage_options=storage_options, scan=source)


__all__ = ["FILTER", "FP_BITS", "Identification", "Query", "filter_features", "filter_scores", "identify",
           "identify_scan", "match", "probability_text", "scan_shape", "screen", "shortlist", "shortlist_screened"]
