"""Candidate ranking: "which of these molecules is it?" for a scan, when the scientist knows the few
molecules that can be on the surface.

For each candidate SMILES, two independent scores in [0, 1] and a combined rank:

- **depiction match**: the model's predicted depiction against the candidate's rendered depiction, per
  element: the Dice overlap of each element's pixels (plus the molecule's footprint), maximised over
  rotations, mirror, translations (FFT cross-correlation) and scales of the candidate;
- **simulation match** (model-free): the measured stack against the candidate's ppafm-simulated stacks
  (a few parameter sets), the normalised cross-correlation of their closest slices, maximised over the
  same rotations, mirror, translations and scales.

``score`` is the mean of the two; ``rank`` orders by it. Candidate depictions and simulations are cached
by canonical SMILES (:class:`CandidateCache`, optionally on disk), so an archive-wide list costs one
simulation per candidate, not one per scan. Flexible candidates are embedded as a few conformers (ETKDG
seeds) and the best conformer counts.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from raypipe.chem.depiction import render_depiction
from raypipe.chem.elements import ELEMENTS
from raypipe.chem.molecule import Molecule
from raypipe.chem.pixels import classify_pixels
from raypipe.errors import MoleculeError
from raypipe.scans.stack import ScanStack
from raypipe.storage import StorageOptions, filesystem, join, write_bytes_atomic
from raypipe.window import DEFAULT_WINDOW, Window

ANGLES = tuple(range(0, 360, 15))
SCALES = (0.9, 1.0, 1.1)
SIM_PARAMETER_SETS = ((0.6, 0.4), (1.2, 0.8))
SIM_SLICES = (0, 3)  # the closest and a mid slice: where bond contrast is
SIM_GRID_DENSITY = 8  # px/Å of the force field: as the training data; 1.6x faster than 10 (bench_simulation)
CACHE_VERSION = 2  # of the cache files: depictions and 2 x 2-pooled simulations, float16


def _conformer_seeds(smiles: str, conformers: int = 3) -> tuple[int, ...]:
    """ETKDG seeds of the conformers tried: ``conformers`` for a flexible molecule, one for a rigid one."""
    from rdkit import Chem
    from rdkit.Chem import Descriptors

    mol = Chem.MolFromSmiles(smiles)
    flexible = mol is not None and Descriptors.NumRotatableBonds(mol) > 0
    return tuple(range(conformers)) if flexible else (0,)


@dataclass
class Candidate:
    smiles: str  # canonical
    molecules: list[Molecule]
    depictions: list[np.ndarray]  # (S, S) class labels, one per conformer
    simulations: list[np.ndarray] = field(default_factory=list)  # (k, S, S) per conformer x parameter set


class CandidateCache:
    """Candidates prepared once: conformers, depiction labels and (lazily) simulated slices, by canonical
    SMILES. ``folder`` (a local folder or ``s3://`` prefix; a library's ``cache/``) keeps each candidate's
    depictions (from its first use) and simulations (from its first simulation) between runs, one ``.npz``
    per candidate and settings, written whole or not at all: a candidate found there needs no conformer for
    its depiction match, and none for its simulation match once simulated."""

    def __init__(self, window: Window | None = None, folder: str | Path | None = None,
                 storage_options: StorageOptions = None, conformers: int = 3, keep_depictions: bool = True) -> None:
        """``conformers``: how many a flexible molecule is tried as (each costs a simulation: a library's
        shortlist uses 1, a short candidate list 3); ``keep_depictions``: write a candidate's file at its
        first use already (False where every candidate is simulated at once: one write, not two)."""
        self.window = window or DEFAULT_WINDOW
        self.conformers = conformers
        self.folder = str(folder) if folder else None
        self.keep_depictions = keep_depictions
        self.storage_options = storage_options
        self.items: dict[str, Candidate | None] = {}
        self.simulator = None
        self.simulated = 0  # candidates simulated here (not loaded from the cache folder)

    def _path(self, smiles: str) -> str | None:
        if self.folder is None:
            return None
        key = json.dumps([smiles, SIM_PARAMETER_SETS, SIM_SLICES, SIM_GRID_DENSITY, self.window.size,
                          self.window.fov, CACHE_VERSION, self.conformers])  # a change of settings is a new file
        return join(self.folder, f"{hashlib.sha256(key.encode()).hexdigest()[:20]}.npz")

    def get(self, smiles: str) -> Candidate | None:
        """The candidate of a SMILES (None where it cannot be used: unparsable, unsupported, not embeddable)."""
        from rdkit import Chem

        mol = Chem.MolFromSmiles(smiles)
        key = Chem.MolToSmiles(mol) if mol is not None else smiles
        if key not in self.items:
            self.items[key] = None if mol is None else (self._load(key) or self._prepare(key))
        return self.items[key]

    def _conformers(self, key: str) -> list[Molecule]:
        molecules = []
        for seed in _conformer_seeds(key, self.conformers):
            try:
                molecules.append(Molecule.from_smiles(key, seed=seed))
            except MoleculeError:
                continue
        return molecules

    def _prepare(self, key: str) -> Candidate | None:
        molecules = self._conformers(key)
        if not molecules:
            return None
        candidate = Candidate(key, molecules, [classify_pixels(render_depiction(m, self.window)) for m in molecules])
        if self.keep_depictions:
            self._save(candidate, only_new=True)  # its depictions now, its simulations when first simulated
        return candidate

    def _save(self, candidate: Candidate, only_new: bool = False) -> None:
        """Write the candidate's file; ``only_new``: not over one already there (another worker's, which may
        hold simulations)."""
        path = self._path(candidate.smiles)
        if path is None:
            return
        import io

        fs, where = filesystem(path, self.storage_options)
        if only_new and fs.exists(where):
            return
        buffer = io.BytesIO()
        simulations = np.stack(candidate.simulations) if candidate.simulations else np.zeros(0)
        np.savez_compressed(buffer, depictions=np.stack(candidate.depictions).astype(np.uint8),
                            simulations=simulations.astype(np.float16))
        write_bytes_atomic(fs, where, buffer.getvalue())  # whole or absent: a kill leaves no half file

    def _load(self, key: str) -> Candidate | None:
        path = self._path(key)
        if path is None:
            return None
        fs, where = filesystem(path, self.storage_options)
        try:
            data = fs.cat_file(where)
        except FileNotFoundError:
            return None
        import io

        with np.load(io.BytesIO(data)) as arrays:
            depictions = list(arrays["depictions"])
            simulations = [s.astype(np.float32) for s in arrays["simulations"]]  # none yet: depictions only
        return Candidate(key, [], depictions, simulations)

    def simulations(self, candidate: Candidate) -> list[np.ndarray]:
        """The candidate's simulated slices, (parameter sets, slices, S/2, S/2) per conformer, made (and kept
        in the folder) on first use."""
        if candidate.simulations:
            return candidate.simulations
        if self.simulator is None:
            from raypipe.simulation.ppm import SimulationSettings, Simulator

            self.simulator = Simulator(SimulationSettings(window=self.window, pix_per_angstrom=SIM_GRID_DENSITY))
        # a candidate read back with its depictions only: its conformers again (the same seeds, the same ones)
        molecules = candidate.molecules or self._conformers(candidate.smiles)
        for molecule in molecules:
            stacks = self.simulator.simulate(molecule, list(SIM_PARAMETER_SETS))
            candidate.simulations.append(np.stack([_pool(_normalised(s.images[list(SIM_SLICES)])) for s in stacks]))
        if candidate.simulations:
            self.simulated += 1
            self._save(candidate)
        return candidate.simulations


def _normalised(images: np.ndarray) -> np.ndarray:
    x = images.astype(np.float32)
    mean = x.mean(axis=(-2, -1), keepdims=True)
    std = x.std(axis=(-2, -1), keepdims=True)
    return (x - mean) / np.maximum(std, 1e-6)


def _transforms(image: np.ndarray, order: int) -> list[np.ndarray]:
    """``image`` (..., S, S) rotated by ANGLES, mirrored, and scaled by SCALES, about its centre (pose ``p`` of
    the list is :func:`_transform` of ``p``)."""
    out = []
    for mirror in (False, True):
        base = image[..., ::-1] if mirror else image
        for scale in SCALES:
            scaled = base if scale == 1.0 else _zoom(base, scale, order)
            out.extend(_rotate(scaled, angle, order) for angle in ANGLES)
    return out


def _transform(image: np.ndarray, pose: int, order: int) -> np.ndarray:
    """Pose number ``pose`` of :func:`_transforms` alone.

    Examples:
        >>> image = np.random.default_rng(0).integers(0, 3, (2, 32, 32)).astype(np.int16)
        >>> all((_transform(image, p, 0) == t).all() for p, t in enumerate(_transforms(image, 0)))
        True
    """
    mirror, rest = divmod(pose, len(SCALES) * len(ANGLES))
    scale, angle = SCALES[rest // len(ANGLES)], ANGLES[rest % len(ANGLES)]
    base = image[..., ::-1] if mirror else image
    return _rotate(base if scale == 1.0 else _zoom(base, scale, order), angle, order)


def _rotate(image: np.ndarray, angle: float, order: int) -> np.ndarray:
    if angle == 0:
        return image
    if order == 0:  # labels: a nearest-pixel gather, its indices computed once per angle
        rows, cols, inside = _nearest_rotation(image.shape[-2:], angle)
        return np.where(inside, image[..., rows, cols], 0).astype(image.dtype)
    return ndimage.rotate(image, angle, axes=(-1, -2), reshape=False, order=order, mode="constant")


@functools.lru_cache(maxsize=64)
def _nearest_rotation(shape: tuple[int, int], angle: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where each pixel of an image of ``shape`` rotated by ``angle`` degrees about its centre comes from
    (nearest source pixel), and whether that source lies inside the image: as ``ndimage.rotate(...,
    order=0, mode="constant")`` rotates, as one gather."""
    h, w = shape
    rows, cols = np.mgrid[:h, :w].astype(np.float64)
    cy, cx = (h - 1) / 2, (w - 1) / 2
    a = np.deg2rad(angle)
    src_r = np.cos(a) * (rows - cy) + np.sin(a) * (cols - cx) + cy
    src_c = -np.sin(a) * (rows - cy) + np.cos(a) * (cols - cx) + cx
    r, c = np.rint(src_r).astype(np.intp), np.rint(src_c).astype(np.intp)
    inside = (r >= 0) & (r < h) & (c >= 0) & (c < w)
    return np.clip(r, 0, h - 1), np.clip(c, 0, w - 1), inside


def _zoom(image: np.ndarray, scale: float, order: int) -> np.ndarray:
    size = image.shape[-1]
    zoomed = ndimage.zoom(image, [1] * (image.ndim - 2) + [scale, scale], order=order)
    new = zoomed.shape[-1]
    if new >= size:
        start = (new - size) // 2
        return zoomed[..., start:start + size, start:start + size]
    pad = [(0, 0)] * (image.ndim - 2) + [((size - new) // 2, size - new - (size - new) // 2)] * 2
    return np.pad(zoomed, pad)


def _pool(mask: np.ndarray) -> np.ndarray:
    """(..., S, S) -> (..., S/2, S/2): 2 x 2 mean (the correlations run at half resolution, 0.28 Å); float32
    for masks and float32 input, float64 otherwise."""
    x = mask.astype(np.float32) if mask.dtype == bool else mask
    return (x[..., ::2, ::2] + x[..., 1::2, ::2] + x[..., ::2, 1::2] + x[..., 1::2, 1::2]) * 0.25


class _Reference:
    """The FFTs of one scan's maps, computed once, correlated with many candidate poses."""

    def __init__(self, maps: np.ndarray) -> None:  # (k, s, s)
        self.size = maps.shape[-1]
        self.shape = (2 * self.size, 2 * self.size)
        self.ffts = np.fft.rfft2(maps, s=self.shape)
        self.sums = maps.reshape(len(maps), -1).sum(axis=1)

    def best(self, k: int, other: np.ndarray) -> float:
        """Max over translations of the cross-correlation of map ``k`` with ``other`` (s, s)."""
        return float(np.fft.irfft2(self.ffts[k] * np.conj(np.fft.rfft2(other, s=self.shape)), s=self.shape).max())

    def best_of(self, k: int, others: np.ndarray) -> np.ndarray:
        """:meth:`best` of each of ``others`` (n, s, s), in one batched FFT."""
        import scipy.fft

        spectra = self.ffts[k].astype(np.complex64) * np.conj(scipy.fft.rfft2(others.astype(np.float32), s=self.shape))
        return scipy.fft.irfft2(spectra, s=self.shape).max(axis=(-2, -1)).astype(np.float64)

    def best_each(self, ks: list[int], others: np.ndarray) -> np.ndarray:
        """:meth:`best` of map ``ks[i]`` with ``others[i]`` (n, s, s) for each i, in one batched FFT."""
        import scipy.fft

        spectra = self.ffts[ks].astype(np.complex64) * np.conj(scipy.fft.rfft2(others.astype(np.float32), s=self.shape))
        return scipy.fft.irfft2(spectra, s=self.shape).max(axis=(-2, -1)).astype(np.float64)


def depiction_score(predicted: np.ndarray, candidate: Candidate, refine: int = 3, search: int = 6) -> float:
    """Per-element Dice overlap of the predicted depiction with the candidate's, best over poses and
    conformers: (footprint overlap + mean over the elements present in either of element overlap) / 2.
    Poses are searched on the footprints at a quarter of the resolution (0.56 Å: the search costs a
    sixteenth); the ``search`` best are scored again on the footprint at full resolution and the ``refine``
    best of those per element. ``search=0``: every pose searched at full resolution (~3x slower, scores
    within 0.04: ``bench/bench_screen.py --compare``)."""
    labels = classify_pixels(predicted[..., :3])
    if not (labels > 0).any():
        return 0.0
    classes = range(len(ELEMENTS) + 1)  # 0: the footprint (any element)
    maps = np.stack([_pool((labels > 0) if k == 0 else (labels == k)).astype(np.float32) for k in classes])
    reference = _Reference(maps)
    if search:  # every pose of each conformer's footprint, pooled before it is posed (a nearest gather)
        coarse = _Reference(_pool(maps[:1]))
        footprints = _pool(np.stack([pose for depiction in candidate.depictions
                                     for pose in _transforms(_pool(depiction > 0), order=0)]))
        totals = coarse.sums[0] + footprints.sum(axis=(-2, -1))
        scores = np.where(totals > 0, 2 * coarse.best_of(0, footprints) / np.where(totals > 0, totals, 1.0), 0.0)
        per_conformer = len(footprints) // len(candidate.depictions)
        chosen = [divmod(int(p), per_conformer) for p in np.argsort(-scores, kind="stable")[:search]]
        poses = np.stack([_transform(candidate.depictions[c].astype(np.int16), p, order=0) for c, p in chosen])
    else:  # every pose at full resolution
        poses = np.stack([pose for depiction in candidate.depictions
                          for pose in _transforms(depiction.astype(np.int16), order=0)])
    # the chosen poses' footprints at full resolution, then the refine best of them per element
    full = _pool(poses > 0).astype(np.float32)
    totals = reference.sums[0] + full.sum(axis=(-2, -1))
    fine = np.where(totals > 0, 2 * reference.best_of(0, full) / np.where(totals > 0, totals, 1.0), 0.0)
    best = 0.0
    for p in np.argsort(-fine, kind="stable")[:refine]:
        ks = [k for k in classes[1:] if reference.sums[k] > 0 or (poses[p] == k).any()]
        if not ks:
            best = max(best, 0.5 * float(fine[p]))
            continue
        others = _pool(np.stack([poses[p] == k for k in ks]))
        totals = reference.sums[ks] + others.sum(axis=(-2, -1))
        overlaps = 2 * reference.best_each(ks, others) / totals
        best = max(best, 0.5 * (float(fine[p]) + float(np.mean(overlaps))))
    return best


def simulation_score(stack_input: np.ndarray, candidate: Candidate, cache: CandidateCache, refine: int = 3) -> float:
    """Best normalised cross-correlation of the measured preprocessed stack's closest slices with the
    candidate's simulated ones, over poses, parameter sets and conformers (clipped to [0, 1]). Poses are
    searched on the closest slice of each simulation; the ``refine`` best are scored on all slices."""
    measured = _normalised(_pool(stack_input[[min(k, len(stack_input) - 1) for k in SIM_SLICES]]))
    reference = _Reference(measured)
    n = measured[0].size
    poses = []
    for simulated in cache.simulations(candidate):  # (parameter sets, slices, S/2, S/2), pooled
        for pose in _transforms(simulated, order=1):  # posed at the correlation's resolution (4x fewer px)
            for sim in _normalised(pose):
                poses.append((reference.best(0, sim[0]) / n, sim))
    best = 0.0
    for _, sim in sorted(poses, key=lambda t: -t[0])[:refine]:
        best = max(best, float(np.mean([reference.best(k, s) / n for k, s in enumerate(sim)])))
    return float(np.clip(best, 0.0, 1.0))


def rank(depiction: np.ndarray, stack_input: np.ndarray, candidates: list[str], cache: CandidateCache, *,
         simulate: bool = True, top: int = 5) -> list[dict]:
    """Rank ``candidates`` (SMILES) for one scan from its predicted ``depiction`` and its preprocessed
    ``stack_input``: the ``top`` best as dicts of ``smiles`` (canonical), ``score``, ``depiction_score``,
    ``simulation_score`` (None with ``simulate=False``) and ``rank``. Unreadable SMILES are skipped."""
    rows = []
    for smiles in dict.fromkeys(candidates):
        candidate = cache.get(smiles)
        if candidate is None:
            continue
        dep = float(depiction_score(depiction, candidate))
        sim = float(simulation_score(stack_input, candidate, cache)) if simulate else None
        rows.append({"smiles": candidate.smiles, "score": dep if sim is None else 0.5 * (dep + sim),
                     "depiction_score": dep, "simulation_score": sim})
    rows.sort(key=lambda r: -r["score"])
    for k, row in enumerate(rows, start=1):
        row["rank"] = k
    return rows[:top]


def rank_candidates(stack: ScanStack | np.ndarray, candidates: list[str], *, model=None, top: int = 5,
                    cache: CandidateCache | None = None, simulate: bool = True) -> list[dict]:
    """The ``top`` candidates for one scan, best first (:func:`rank`). ``stack``: a ScanStack (preprocessed
    for the model here) or an already preprocessed (n_slices, S, S) array; ``model``: a loaded model or a
    model file (default: the shipped model)."""
    from raypipe.model.inference import Model, load_model
    from raypipe.scans.preprocess import preprocess

    model = model if isinstance(model, Model) else load_model(model)
    window = model.config.window
    cache = cache or CandidateCache(window)
    x = stack if isinstance(stack, np.ndarray) else preprocess(stack, n_slices=model.config.n_slices, window=window)
    return rank(model.predict(x[None])[0], x, candidates, cache, simulate=simulate, top=top)


def read_candidate_names(source: str | Path) -> tuple[list[str], list[str]]:
    """(SMILES, names) from a .smi file (SMILES [name] per line; a line without a name is named by its
    number) or a JSON list of SMILES."""
    if str(source).endswith(".json"):
        smiles = read_candidates(source)
        return smiles, [f"candidate-{k + 1}" for k in range(len(smiles))]
    smiles, names = [], []
    for k, line in enumerate(Path(source).read_text().splitlines()):
        fields = line.split()
        if fields and not fields[0].startswith("#"):
            smiles.append(fields[0])
            names.append(" ".join(fields[1:]) or f"line-{k + 1}")
    return smiles, names


def read_candidates(source: str | Path | list[str]) -> list[str]:
    """Candidate SMILES from a list, a .smi file (SMILES [name] per line) or a JSON list."""
    if isinstance(source, list):
        return source
    text = Path(source).read_text()
    if str(source).endswith(".json"):
        return list(json.loads(text))
    return [line.split()[0] for line in text.splitlines() if line.strip() and not line.startswith("#")]
