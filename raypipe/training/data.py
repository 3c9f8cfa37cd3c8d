"""Training batches from simulation shards with plain pyarrow (no Ray): the data side of the plain
training loop (:mod:`raypipe.training.loop`), on a CPU machine or a lent GPU.

:class:`ShardStream` reads the shards of one split a few at a time into a shuffle buffer (prefetched by a
thread while the model trains), so memory is bounded by ``buffer_shards`` shards whatever the dataset's
size. Every pass lists the shard folder again, so a training run started while ``raypipe simulate`` is
still writing shards takes up the new ones on its next pass.

A run may train on several data sets at once (``data_uri`` a list: e.g. the catalogue's shards and an
element-analogue set that balances a rare element): their shards are drawn from as one pool, and the
validation rows are taken from the data sets in their order. They must hold the same grid and the same
storage form (plain or compact). ``shares`` (a run's ``data_shares``) says how often each data set's shards
are drawn: a small balancing set drawn as a tenth of the shards, say, rather than in proportion to its size.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

import numpy as np

from raypipe.chem.elements import formula_counts
from raypipe.simulation.schema import read_stacks, stack_columns, stack_shape
from raypipe.storage import StorageOptions, filesystem, join


def decode_targets(pngs, centres=None, formulas=None) -> np.ndarray:
    """PNG depictions -> (N, 3, S, S) float32 in [-1, 1] (Pillow only: no RDKit needed here). With
    ``centres`` (the model's :class:`raypipe.Window`, for a model with the atom-centre output) a fourth
    channel holds each depiction's centre target (:func:`centre_targets`); with ``formulas`` (the molecules'
    Hill formulas, for a model with the count output) one constant plane per element of ``ELEMENTS`` follows,
    the formula's count of it (:mod:`raypipe.model.heads`)."""
    targets = _depictions_and_centres(pngs, centres)
    if formulas is None:
        return targets
    counts = np.stack([formula_counts(f) for f in formulas])
    planes = np.broadcast_to(counts[:, :, None, None], (len(counts), counts.shape[1], *targets.shape[2:]))
    return np.concatenate([targets, planes], axis=1)


def _depictions_and_centres(pngs, centres=None) -> np.ndarray:
    import io

    from PIL import Image

    pictures = np.stack([np.asarray(Image.open(io.BytesIO(p)).convert("RGB")) for p in pngs])
    targets = pictures.transpose(0, 3, 1, 2).astype(np.float32) / 127.5 - 1.0
    if centres is None:
        return targets
    # a shard holds each molecule under several parameter sets: one centre target per distinct depiction
    distinct = {bytes(p): k for k, p in enumerate(pngs)}
    first = list(distinct.values())
    spots = centre_targets(pictures[first], centres)
    index = {key: n for n, key in enumerate(distinct)}
    return np.concatenate([targets, spots[[index[bytes(p)] for p in pngs]][:, None]], axis=1)


def centre_targets(depictions: np.ndarray, window) -> np.ndarray:
    """(N, S, S, 3) uint8 true depictions -> (N, S, S) float32 centre targets in [-1, 1]: a Gaussian spot of
    ``CENTRE_SIGMA`` pixels (peak 1) at every atom the depiction shows, found as graph extraction finds
    them (:func:`raypipe.chem.pixels.find_atoms`: a hydrogen hiding its twin or its atom is one spot, as
    the top view shows it), -1 elsewhere."""
    from raypipe.chem.pixels import classify_pixels, find_atoms
    from raypipe.model.heads import CENTRE_SIGMA

    size = depictions.shape[1]
    centre = np.arange(size) + 0.5  # pixel centres
    out = np.zeros(depictions.shape[:3], np.float32)
    reach = int(np.ceil(4 * CENTRE_SIGMA))
    for n, depiction in enumerate(depictions):
        atoms = find_atoms(classify_pixels(depiction), window)
        if not atoms:
            continue
        for col, row in window.to_pixels(np.array([(a.x, a.y) for a in atoms])):
            r0, r1 = max(int(row) - reach, 0), min(int(row) + reach + 1, size)
            c0, c1 = max(int(col) - reach, 0), min(int(col) + reach + 1, size)
            if r0 >= r1 or c0 >= c1:
                continue
            spot = np.exp(-((centre[r0:r1, None] - row) ** 2 + (centre[None, c0:c1] - col) ** 2)
                          / (2 * CENTRE_SIGMA**2))
            np.maximum(out[n, r0:r1, c0:c1], spot, out=out[n, r0:r1, c0:c1])
    return out * 2 - 1


def zscore_stacks(stacks: np.ndarray) -> np.ndarray:
    """(N, D, S, S) raw stacks -> per-stack z-scored float32 (no median: augmentation ends with it)."""
    x = stacks.astype(np.float32)
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    std = x.std(axis=(1, 2, 3), keepdims=True)
    return np.where(std > 0, (x - mean) / np.maximum(std, 1e-12), 0.0).astype(np.float32)


def data_uris(data_uri: str | list[str]) -> list[str]:
    """One data set's URI or a list of them, as a list.

    Examples:
        >>> data_uris("out/sim/a"), data_uris(["out/sim/a", "s3://b/sim"])
        (['out/sim/a'], ['out/sim/a', 's3://b/sim'])
    """
    uris = [data_uri] if isinstance(data_uri, str) else list(data_uri)
    if not uris or not all(isinstance(u, str) and u for u in uris):
        raise ValueError(f"data_uri: a data set's URI or a list of them, not {data_uri!r}")
    return uris


def check_shares(shares: list[float] | None, uris: list[str]) -> list[float] | None:
    """Each data set's share of the shards a run draws (None: every shard alike): one positive number per
    data set.

    Examples:
        >>> check_shares([9, 1], ["a", "b"])
        [9.0, 1.0]
    """
    if shares is None:
        return None
    if not isinstance(shares, (list, tuple)) or len(shares) != len(uris) or not all(
            isinstance(w, (int, float)) and w > 0 for w in shares):
        raise ValueError(f"data_shares: one positive number per data set of data_uri ({len(uris)}), not {shares!r}")
    return [float(w) for w in shares]


def list_shards(data_uri: str, storage_options: StorageOptions = None) -> list[str]:
    fs, base = filesystem(data_uri, storage_options)
    fs.invalidate_cache()
    return sorted(fs.glob(join(base, "shards", "shard-*.parquet")))


def _first_shard(data_uri: str, storage_options: StorageOptions = None, fov: bool = False):
    """The first shard's schema (it says the dataset's grid and storage form), and with ``fov`` its first
    rows' fields of view. FileNotFoundError when the dataset has no shard."""
    import pyarrow.parquet as pq

    shards = list_shards(data_uri, storage_options)
    if not shards:
        raise FileNotFoundError(f"{data_uri}: no simulation shards (shards/shard-*.parquet)")
    fs, _ = filesystem(data_uri, storage_options)
    with fs.open(shards[0], "rb") as f:
        parquet = pq.ParquetFile(f)
        fovs = parquet.read_row_group(0, columns=["fov"])["fov"].to_pylist() if fov and parquet.metadata.num_rows \
            else []
        return parquet.schema_arrow, fovs


def first_shard_schema(data_uri: str, storage_options: StorageOptions = None):
    return _first_shard(data_uri, storage_options)[0]


def check_grid(data_uri: str | list[str], config, storage_options: StorageOptions = None) -> None:
    """Refuse shards whose stacks do not fit the model's grid (slices, pixels, field of view), and data sets
    of different storage forms trained together."""
    forms = {}
    for uri in data_uris(data_uri):
        schema, fovs = _first_shard(uri, storage_options, fov=True)
        shape = stack_shape(schema)
        want = (config.n_slices, config.size, config.size)
        if shape != want or any(abs(f - config.fov) > 1e-6 for f in fovs[:1]):
            raise ValueError(f"{uri}: shards hold stacks of {shape} on a {fovs[0] if fovs else '?'} Å window, the "
                             f"model's grid is {want} on {config.fov} Å; simulate for this grid or set the model's")
        forms[uri] = tuple(stack_columns(schema))
    if len(set(forms.values())) > 1:
        raise ValueError("data sets of different storage forms cannot be trained together: "
                         + "; ".join(f"{uri}: {'compact' if 'stack_u8' in cols else 'plain'}"
                                     for uri, cols in forms.items()))


def read_shard(fs, path: str, split: str | None, columns: list[str]) -> dict[str, np.ndarray | list]:
    """One shard's rows of ``split`` (None: all): ``stack`` as (N, D, S, S) Δf (plain or compact shards:
    :func:`raypipe.simulation.shards.read_stacks`), others as lists."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    with fs.open(path, "rb") as f:
        parquet = pq.ParquetFile(f)
        wanted = set(columns) | {"split"}
        if "stack" in wanted:
            wanted = (wanted - {"stack"}) | set(stack_columns(parquet.schema_arrow))
        table = parquet.read(columns=sorted(wanted))
    if split is not None:
        table = table.filter(pc.equal(table["split"], split))
    return {name: read_stacks(table) if name == "stack" else table[name].to_pylist() for name in columns}


class ShardStream:
    """Endless random batches ``(stack, target)`` of one split: raw z-scored stacks (B, D, S, S) float32
    and target depictions (B, 3, S, S) in [-1, 1], with their centre targets as a fourth channel when
    ``centres`` (the model's window) is given and their count planes when ``counts`` (module docs,
    :func:`decode_targets`)."""

    def __init__(self, data_uri: str | list[str], split: str = "train", *, batch_size: int = 16, seed: int = 0,
                 buffer_shards: int = 8, storage_options: StorageOptions = None, centres=None,
                 counts: bool = False, shares: list[float] | None = None) -> None:
        self.data_uris, self.split, self.batch_size = data_uris(data_uri), split, batch_size
        self.shares = check_shares(shares, self.data_uris)
        self.centres, self.counts = centres, counts
        self.buffer_shards = buffer_shards
        self.storage_options = storage_options
        self.rng = np.random.default_rng(seed)
        self.passes = 0
        self.shards_seen = 0

    def _groups(self) -> Iterator[list[tuple[str, str]]]:
        while True:
            listed = {uri: list_shards(uri, self.storage_options) for uri in self.data_uris}
            shards = [(uri, path) for uri in self.data_uris for path in listed[uri]]
            if not shards:
                raise FileNotFoundError(f"{', '.join(self.data_uris)}: no simulation shards (shards/shard-*.parquet)")
            self.shards_seen = len(shards)
            order = [shards[i] for i in self.rng.permutation(len(shards))] if self.shares is None \
                else self._shared(listed, len(shards))
            for k in range(0, len(order), self.buffer_shards):
                yield order[k:k + self.buffer_shards]
            self.passes += 1

    def _shared(self, listed: dict[str, list[str]], n: int) -> list[tuple[str, str]]:
        """A pass of ``n`` shards, each from a data set drawn by its share (of those with shards), and within
        a data set in a random order, again from the start when it runs out."""
        live = [uri for uri in self.data_uris if listed[uri]]
        weights = np.array([self.shares[self.data_uris.index(uri)] for uri in live])
        queues: dict[str, list[int]] = {uri: [] for uri in live}
        order = []
        for k in self.rng.choice(len(live), size=n, p=weights / weights.sum()):
            uri = live[k]
            if not queues[uri]:
                queues[uri] = list(self.rng.permutation(len(listed[uri])))
            order.append((uri, listed[uri][queues[uri].pop()]))
        return order

    def _load(self, group: list[tuple[str, str]]) -> tuple[np.ndarray, np.ndarray]:
        stacks, targets = [], []
        systems = {uri: filesystem(uri, self.storage_options)[0] for uri in dict.fromkeys(u for u, _ in group)}
        for uri, path in group:
            rows = read_shard(systems[uri], path, self.split, ["stack", "target_png", "formula"])
            if len(rows["target_png"]):
                stacks.append(zscore_stacks(rows["stack"]).astype(np.float16))  # half the buffer's memory
                targets.append(decode_targets(rows["target_png"], self.centres,  # within 3e-4; counts exact
                                              rows["formula"] if self.counts else None).astype(np.float16))
        if not stacks:
            return np.zeros((0,)), np.zeros((0,))
        return np.concatenate(stacks), np.concatenate(targets)

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        loaded: queue.Queue = queue.Queue(maxsize=1)
        stop = threading.Event()

        def producer() -> None:
            try:
                for group in self._groups():
                    if stop.is_set():
                        return
                    item = self._load(group)
                    while not stop.is_set():
                        try:
                            loaded.put(item, timeout=0.5)
                            break
                        except queue.Full:
                            continue
                    if stop.is_set():
                        return
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer
                loaded.put(exc)

        thread = threading.Thread(target=producer, name="raypipe-shards", daemon=True)
        thread.start()
        carry_s, carry_t = None, None
        try:
            while True:
                item = loaded.get()
                if isinstance(item, BaseException):
                    raise item
                stacks, targets = item
                if len(stacks) == 0:
                    continue
                if carry_s is not None:
                    stacks, targets = np.concatenate([carry_s, stacks]), np.concatenate([carry_t, targets])
                order = self.rng.permutation(len(stacks))
                full = len(order) // self.batch_size * self.batch_size
                for k in range(0, full, self.batch_size):
                    idx = order[k:k + self.batch_size]
                    yield stacks[idx].astype(np.float32), targets[idx].astype(np.float32)
                rest = order[full:]
                carry_s, carry_t = stacks[rest], targets[rest]
        finally:
            stop.set()
            thread.join(timeout=60)  # never leave it reading while the interpreter shuts down


def fixed_rows(data_uri: str | list[str], split: str, n: int, storage_options: StorageOptions = None) -> list[dict]:
    """The first ``n`` rows of ``split`` in shard-name order (data set after data set), with their truth
    (raw ``stack``, ``target_png``, ``atoms``, ``bonds``, ``corrugation``, ``smiles``...): the same rows
    every time once those shards exist (the validation set)."""
    rows: list[dict] = []
    columns = ["stack", "target_png", "atoms", "bonds", "corrugation", "smiles", "amplitude", "stiffness"]
    for uri in data_uris(data_uri):
        fs, _ = filesystem(uri, storage_options)
        for path in list_shards(uri, storage_options):
            part = read_shard(fs, path, split, columns)
            for k in range(len(part["smiles"])):
                rows.append({c: (part[c][k]) for c in columns})
                if len(rows) >= n:
                    return rows
    return rows
