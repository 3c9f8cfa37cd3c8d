"""The training shard schema: one Parquet row per (molecule, parameter set). Plain pyarrow and numpy only
(no RDKit, no ppafm), so the training side reads shards on any machine.

Schema (plain pyarrow reads it; ``stack`` is Arrow's canonical fixed-shape tensor extension, so
``table["stack"].combine_chunks().to_numpy_ndarray()`` gives an (N, 10, 128, 128) array):

==============  ==========================================================================
molecule_id     string, the id from the molecule list
smiles          string, canonical SMILES (RDKit, no explicit H)
formula         string, Hill formula with hydrogens
corrugation     float32, height spread of all atoms in Å
split           string, "train" / "val" / "test" (80/10/10 by a hash of the canonical SMILES)
amplitude       float64, oscillation amplitude in Å (peak to peak)
stiffness       float64, CO lateral stiffness in N/m
distance        float64, tip height of the closest image above the top atom in Å (jittered per stack)
fov             float64, field of view in Å (square window)
stack           fixed_shape_tensor<float16>[10, 128, 128], frequency shift in Hz, closest first
target_png      binary, the ball-and-stick depiction (PNG, 128 x 128 RGB)
atoms           list<struct<element, x, y, z, charge>>, molecule coordinates in Å
bonds           list<struct<i, j, order>>, atom indices, order 1/1.5/2/3
==============  ==========================================================================

**Compact shards** (``compact=True``; ``raypipe simulate --compact``) replace ``stack`` by three columns, a
tenth of the bytes (8-bit, as QUAM-AFM and real exports are):

==============  ==========================================================================
stack_u8        fixed_shape_tensor<uint8>[10, 128, 128], each slice scaled to 0-255 over its own range
stack_lo        fixed_size_list<float32>[10], each slice's minimum (Hz)
stack_hi        fixed_size_list<float32>[10], each slice's maximum (Hz)
==============  ==========================================================================

Δf = ``stack_lo + stack_u8 / 255 * (stack_hi - stack_lo)`` per slice (at most 0.2 % of a slice's range off).
Readers take either form through :func:`read_stacks` and :func:`stack_columns`.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

ATOM = pa.struct([("element", pa.string()), ("x", pa.float32()), ("y", pa.float32()), ("z", pa.float32()),
                  ("charge", pa.float32())])
BOND = pa.struct([("i", pa.int32()), ("j", pa.int32()), ("order", pa.float32())])


COMPACT_COLUMNS = ("stack_u8", "stack_lo", "stack_hi")


def shard_schema(n_images: int = 10, size: int = 128, compact: bool = False) -> pa.Schema:
    if compact:
        stack = [("stack_u8", pa.fixed_shape_tensor(pa.uint8(), [n_images, size, size])),
                 ("stack_lo", pa.list_(pa.float32(), n_images)), ("stack_hi", pa.list_(pa.float32(), n_images))]
    else:
        stack = [("stack", pa.fixed_shape_tensor(pa.float16(), [n_images, size, size]))]
    return pa.schema([
        ("molecule_id", pa.string()), ("smiles", pa.string()), ("formula", pa.string()),
        ("corrugation", pa.float32()), ("split", pa.string()), ("amplitude", pa.float64()),
        ("stiffness", pa.float64()), ("distance", pa.float64()), ("fov", pa.float64()),
        *stack, ("target_png", pa.binary()), ("atoms", pa.list_(ATOM)), ("bonds", pa.list_(BOND)),
    ])


def is_compact(schema: pa.Schema) -> bool:
    """Whether a shard's schema stores its stacks in the compact 8-bit form."""
    return "stack_u8" in schema.names


def stack_shape(schema: pa.Schema) -> tuple[int, ...]:
    """(slices, pixels, pixels) of a shard's stacks, either form."""
    return tuple(schema.field("stack_u8" if is_compact(schema) else "stack").type.shape)


def stack_columns(schema: pa.Schema) -> list[str]:
    """The columns that hold a shard's stacks: ``["stack"]`` or the three compact ones."""
    return list(COMPACT_COLUMNS) if is_compact(schema) else ["stack"]


def compact_stacks(stacks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, D, S, S) Δf -> (uint8 stacks, per-slice minima, per-slice maxima), the compact columns.

    Examples:
        >>> import numpy as np
        >>> x = np.linspace(-3, 1, 2 * 4 * 4, dtype=np.float32).reshape(1, 2, 4, 4)
        >>> u8, lo, hi = compact_stacks(x)
        >>> u8.dtype, lo.shape, float(np.abs(expand_stacks(u8, lo, hi) - x).max()) < 0.2 * 4 / 255
        (dtype('uint8'), (1, 2), True)
    """
    x = np.asarray(stacks, np.float32)
    lo, hi = x.min(axis=(2, 3)), x.max(axis=(2, 3))
    span = np.where(hi > lo, hi - lo, 1.0)[..., None, None]
    u8 = np.clip(np.rint((x - lo[..., None, None]) / span * 255), 0, 255).astype(np.uint8)
    return u8, lo, hi


def expand_stacks(u8: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """The compact columns -> (N, D, S, S) float32 Δf."""
    lo, hi = np.asarray(lo, np.float32)[..., None, None], np.asarray(hi, np.float32)[..., None, None]
    return lo + u8.astype(np.float32) * ((hi - lo) / 255.0)


def read_stacks(table: pa.Table) -> np.ndarray:
    """A shard table's stacks as (N, D, S, S) Δf, float16 (plain shards) or float32 (compact ones)."""
    shape = stack_shape(table.schema)
    if table.num_rows == 0:
        return np.zeros((0, *shape), np.float32)
    if not is_compact(table.schema):
        return table["stack"].combine_chunks().to_numpy_ndarray()
    u8 = table["stack_u8"].combine_chunks().to_numpy_ndarray()
    lo, hi = (np.asarray(table[c].combine_chunks().flatten().to_numpy(), np.float32).reshape(-1, shape[0])
              for c in ("stack_lo", "stack_hi"))
    return expand_stacks(u8, lo, hi)


REJECT_SCHEMA = pa.schema([("molecule_id", pa.string()), ("smiles", pa.string()), ("reason", pa.string())])
