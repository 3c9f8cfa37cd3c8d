"""The labelled rows' schema: every column of what :func:`raypipe.predict_dataset` returns and the labels
table stores, with its description (and unit) in the Arrow field metadata, which the Iceberg table keeps
as each column's doc. A new output column is one field here and one value in
:func:`raypipe.pipelines.stages.extract`."""

from __future__ import annotations

import pyarrow as pa


def _field(name: str, kind: pa.DataType, doc: str, unit: str | None = None) -> pa.Field:
    """A column with its description (and unit) in the Arrow field metadata: ``doc`` is what PyIceberg
    writes as the Iceberg column's doc, so every reader of the table sees it."""
    text = f"{doc} [{unit}]" if unit else doc
    metadata = {b"doc": text.encode()} | ({b"unit": unit.encode()} if unit else {})
    return pa.field(name, kind, metadata=metadata)


ATOM_STRUCT = pa.struct([
    _field("element", pa.string(), "element symbol (H C N O F S P Cl Br I)"),
    _field("x", pa.float64(), "position in the scan window, left to right", "Å"),
    _field("y", pa.float64(), "position in the scan window, bottom to top", "Å"),
    _field("confidence", pa.float64(), "how fully the atom's ball is drawn in the depiction (0-1)"),
])
BOND_STRUCT = pa.struct([
    _field("i", pa.int32(), "index of the first atom in atoms"),
    _field("j", pa.int32(), "index of the second atom in atoms"),
    _field("order", pa.float64(), "bond order perceived by RDKit: 1, 1.5 (aromatic), 2, 3; null when the graph "
                                  "is no valid molecule"),
    _field("confidence", pa.float64(), "how continuous the stick is in the depiction (0-1)"),
])
MATCH_STRUCT = pa.struct([
    _field("smiles", pa.string(), "the molecule (canonical SMILES)"),
    _field("name", pa.string(), "its name or id in the library or candidates file"),
    _field("score", pa.float64(), "combined score: the mean of the simulation and depiction scores (0-1)"),
    _field("filter_score", pa.float64(), "stage 1: the molecule's probability over the whole library given the "
                                         "reading's layout, graph and composition and the scan's footprint (0-1)"),
    _field("simulation_score", pa.float64(), "model-free: correlation of the measured stack with the molecule's "
                                             "ppafm simulation, best over rotation, mirror, translation and scale (0-1)"),
    _field("depiction_score", pa.float64(), "per-element overlap of the predicted depiction with the molecule's, "
                                            "best over the same poses (0-1)"),
    _field("rank", pa.int32(), "1 = the best match"),
])
OUTPUT_SCHEMA = pa.schema([
    _field("scan_id", pa.string(), "the stack's id: its name plus a hash of its values"),
    _field("source", pa.string(), "where the stack came from: file.h5::id, a folder, a file, an s3:// URI"),
    _field("format", pa.string(), "the reader that read it: raypipe-hdf5, image-folder, nanonis-sxm, npz, "
                                  "quam-afm"),
    _field("n_images", pa.int32(), "images in the stack as read (before resampling to the model's slices)"),
    _field("heights", pa.list_(pa.float64()), "relative tip heights of the images, closest first; null when "
                                              "unknown", "Å"),
    _field("amplitude", pa.float64(), "oscillation amplitude (peak to peak) where the format records it", "Å"),
    _field("stiffness", pa.float64(), "CO tip lateral stiffness where the format records it", "N/m"),
    _field("mode", pa.string(), "acquisition mode where known (FM df, AM ...)"),
    _field("fov", pa.list_(pa.float64()), "field of view (x, y) of the scan as used; null when unknown (the "
                                          "image is then padded to a square and fitted to the model's window)", "Å"),
    _field("fov_source", pa.string(), "where the field of view came from: user (--fov), sidecar (raypipe.json), "
                                      "file (the format records it), estimated, or unknown"),
    _field("input_preview", pa.binary(), "PNG: the closest and farthest preprocessed slices side by side"),
    _field("depiction", pa.binary(), "PNG: the predicted ball-and-stick depiction on the model's window"),
    _field("atoms", pa.list_(ATOM_STRUCT), "atoms read back from the depiction"),
    _field("bonds", pa.list_(BOND_STRUCT), "bonds read back from the depiction"),
    _field("formula", pa.string(), "Hill formula of the read-back graph, hydrogens included (its heavy atoms' "
                                   "elements agree with the formula of the scan's sidecar where it gives one, else "
                                   "with the model's count output where it has one)"),
    _field("known_formula", pa.string(), "the molecule's formula as the scan's sidecar gives it, which the graph was "
                                         "read to agree with; null when none is given"),
    _field("formula_counts", pa.string(), "Hill formula of the model's count output (its rounded counts of each "
                                          "element, hidden hydrogens included); null for a model without one"),
    _field("smiles", pa.string(), "canonical SMILES when the graph is a valid molecule, else null"),
    _field("confidence", pa.float64(), "probability that the formula is right, calibrated on simulated stacks "
                                       "with known truth and stored with the model (0-1); null for a model "
                                       "without calibration"),
    _field("depiction_quality", pa.float64(), "how cleanly the depiction is drawn: the weakest atom or bond "
                                              "drawing score of the graph (0-1); not a probability of being right"),
    _field("truth_formula", pa.string(), "the true formula where the scan's metadata holds it (simulations)"),
    _field("truth_smiles", pa.string(), "the true SMILES where the scan's metadata holds it (simulations)"),
    _field("truth_depiction", pa.binary(), "PNG: the true molecule's depiction on the model's window, where the "
                                           "scan's metadata holds its atoms (simulations)"),
    _field("candidates", pa.list_(MATCH_STRUCT), "the candidate molecules (a --candidates file or the scan's "
                                                "sidecar) ranked for this scan, best first; null when none were given"),
    _field("identified", pa.list_(MATCH_STRUCT), "the library molecules most likely shown, best first (with a "
                                                "--library); null otherwise"),
    _field("model", pa.string(), "the model that labelled the row: name@first 12 hex of its file's SHA-256"),
    _field("status", pa.string(), "ok or error"),
    _field("error", pa.string(), "for an error row: the file and the reason"),
    _field("error_kind", pa.string(), "permanent (a ScanError: the file is what it is; a DepictionError: "
                                      "the model drew no readable molecule, the depiction kept) or transient (I/O, "
                                      "a time limit, a crash: retried by the next run); null for ok rows"),
    _field("unit", pa.string(), "the scan unit (file or folder) the row came from"),
    _field("unit_fingerprint", pa.string(), "fingerprint of the unit's files (names, sizes, times) when read"),
])
