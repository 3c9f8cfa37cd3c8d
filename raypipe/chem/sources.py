"""Lists of molecules to simulate or depict: SMILES files (.smi, .csv), local or in object storage."""

from __future__ import annotations

import csv
import gzip
import io
from pathlib import Path

from rdkit import RDConfig

from raypipe.storage import StorageOptions, filesystem

NCI_FIRST_5K = Path(RDConfig.RDDataDir) / "NCI" / "first_5K.smi"


def read_molecule_list(source: str | Path | list[str] | None,
                       storage_options: StorageOptions = None) -> list[tuple[str, str]]:
    """(molecule_id, smiles) pairs from a list of SMILES, a .smi file or a .csv file.

    - ``None``: RDKit's bundled ``Data/NCI/first_5K.smi``;
    - a list of SMILES: ids ``mol-00000``, ``mol-00001``... in list order;
    - ``.smi``: one molecule per line, SMILES then an optional id (whitespace separated, ``#`` comments);
    - either one gzip-compressed (``.smi.gz``, ``.csv.gz``), e.g. the training catalogue
      :data:`raypipe.chem.catalog.CATALOG`;
    - ``.csv``: a header with a ``smiles`` column (any case) and an id column (``id``, ``name`` or ``cid``).
    Lines without an id get ``line-<k>``. Ids must be unique.
    """
    if source is None:
        source = NCI_FIRST_5K
    if isinstance(source, list):
        pairs = [(f"mol-{k:05d}", s) for k, s in enumerate(source)]
    else:
        fs, path = filesystem(str(source), storage_options)
        if not fs.exists(path):
            raise FileNotFoundError(f"{source}: no such molecule list")
        data = fs.cat_file(path)
        if path.lower().endswith(".gz"):
            data = gzip.decompress(data)
        text = data.decode()
        if path.lower().removesuffix(".gz").endswith(".csv"):
            pairs = _read_csv(text, str(source))
        else:
            pairs = _read_smi(text)
    ids = [i for i, _ in pairs]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{source}: molecule ids are not unique")
    return pairs


def _read_smi(text: str) -> list[tuple[str, str]]:
    pairs = []
    for k, line in enumerate(text.splitlines()):
        fields = line.split()
        if fields and not fields[0].startswith("#"):
            pairs.append((fields[1] if len(fields) > 1 else f"line-{k}", fields[0]))
    return pairs


def _read_csv(text: str, source: str) -> list[tuple[str, str]]:
    reader = csv.DictReader(io.StringIO(text))
    columns = {c.lower(): c for c in reader.fieldnames or []}
    if "smiles" not in columns:
        raise ValueError(f"{source}: no 'smiles' column (columns: {reader.fieldnames})")
    id_col = next((columns[c] for c in ("id", "name", "cid") if c in columns), None)
    return [(row[id_col] if id_col and row[id_col] else f"line-{k + 1}", row[columns["smiles"]])
            for k, row in enumerate(reader) if row[columns["smiles"]]]
