"""Graph reading's chemistry levers on validation stacks: one prediction per row, read back with each lever
of :mod:`raypipe.chem.graph` off and then on, one after the other, in this run.

    python bench/bench_reading.py --data ../shared/sim/catalog-r4-tail2 --n 256
    python bench/bench_reading.py --data ../shared/sim/catalog-r4-tail2 --n 256 --skip 256   # an untuned set

The levers, cumulative: ``before`` (the reading of raypipe 0.20: an H guessed below a carbon whose bond
directions sum above 0.45, no relabelling, an H without a stick left unbonded, every seen H kept); ``under``
(that guess only above ``UNDER_RESIDUAL``); ``relabel`` (chemistry may relabel atoms to their ``alternatives``);
``orphan`` (an H without a stick takes its nearest heavy atom within ``ORPHAN_REACH``); ``faint`` (chemistry may
leave out one H fainter than ``WEAK_H``); ``neutral`` (a reading that separates charges pays ``SEPARATION_COST``
a pair); ``overfull`` (chemistry may also leave out an H drawn on an O or N its heavy neighbours already fill,
``OVERFULL_ELEMENTS``); ``isoelectronic`` (a charged atom of the cheapest reading may be read as the neutral
element with its electrons, ``ISOELECTRONIC_COST``); ``lighter`` (an S or P perceived as O or N too, where its
neighbours allow, ``PERCEIVE_LIGHTER``: RDKit tries sulfur's valences 6 and 3 before 2); ``cumulene`` (each atom
with two double bonds costs ``CUMULENE_COST``); ``nitrogen`` (where every reading costs more than
``NITROGEN_GUESS``, a carbon drawn without H may be read as N at that cost); ``ring`` (that carbon only on a
ring, ``NITROGEN_IN_RING``); ``terminal`` (a one-bond atom drawn
on an O or N its other neighbours fill may be left out too, ``OVERFULL_TERMINALS``, and two atoms at once,
``DROPS_AT_ONCE``); ``alkyne`` (an alkyne drawn short, its two carbons merged into one ball, may be rebuilt,
``SP_CHAIN_COST``); ``rehome`` (an H that overfills its O or N may move to a nearby O or N with room, the H of an
H-bond drawn on the wrong end, ``REHOME_COST``); ``hydroxy`` (an F drawn with an H may be read as O, an OH
drawn in fluorine's colour, ``HYDROXY_HALOGEN``: the shipped reading). Reports the
fraction read exactly (``total``), the same on flat molecules (0-50 pm), per-atom precision and recall, the
share with a valid SMILES, the share whose SMILES is the true molecule's own (bond orders and charges too: what
a user queries), and milliseconds a graph. Validation rows only: never a test split.
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def add_prediction_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of a bench that reads one prediction of validation rows (this one, bench_agreement)."""
    parser.add_argument("--data", required=True, help="a simulated data set (plain or compact shards)")
    parser.add_argument("--split", default="val")
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--skip", type=int, default=0, help="begin after this many rows (a second, untuned set)")
    parser.add_argument("--model", default=None, help="a model file (default: the shipped model)")
    parser.add_argument("--views", type=int, default=None)
    parser.add_argument("--cache", default=None, help="keep the prediction here (pickle) and reuse it next time")
    parser.add_argument("--out", default=None, help="also write the figures here (JSON)")


def validation_prediction(args: argparse.Namespace, bench: str, needs: str):
    """(model, rows, prediction): the model's prediction of the validation rows ``args`` name, from
    ``args.cache`` where it holds this very prediction. Refuses a test split, and a model without the
    atom-centre output (``needs`` says what for)."""
    from raypipe.model.inference import load_model
    from raypipe.training.data import fixed_rows
    from raypipe.training.validation import predict_rows

    if args.split == "test":
        raise SystemExit(f"{bench}: validation rows only (the test split is for evaluation)")
    model = load_model(args.model, device="cpu", views=args.views)
    if not model.has_centres:
        raise SystemExit(f"{model.tag}: {needs} a model with the atom-centre output")
    rows = fixed_rows(args.data, args.split, args.skip + args.n)[args.skip:]
    cache = Path(args.cache) if args.cache else None
    key = (model.tag, model.views, args.data, args.split, args.skip, len(rows))
    saved = pickle.loads(cache.read_bytes()) if cache is not None and cache.is_file() else None
    start = time.perf_counter()
    if saved is not None and saved[0] == key:
        prediction = saved[1]
    else:
        prediction = predict_rows(model, rows)
        if cache is not None:
            cache.write_bytes(pickle.dumps((key, prediction)))
    print(f"{model.tag}, {model.views} views: {len(rows)} {args.split} rows of {args.data} predicted in "
          f"{time.perf_counter() - start:.0f} s", flush=True)
    return model, rows, prediction


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_prediction_arguments(parser)
    args = parser.parse_args(argv)

    import raypipe.chem.hydrogens as hydrogens
    import raypipe.chem.pixels as pixels
    from raypipe.chem.graph import read_graph
    from raypipe.training.validation import score_rows

    model, rows, prediction = validation_prediction(args, "bench_reading", "the reading's levers need")
    window, maps = model.config.window, [prediction.centre_map(k) for k in range(len(rows))]
    # each lever in the order it came, with the constant that turns it off: a lever's reading has every later one off
    steps = [("before", None, {}), ("under", hydrogens, {"UNDER_RESIDUAL": 0.45}),
             ("relabel", hydrogens, {"RELABEL_POOL": 0}), ("orphan", pixels, {"ORPHAN_REACH": 0.0}),
             ("faint", hydrogens, {"WEAK_H": 0.0}), ("neutral", hydrogens, {"SEPARATION_COST": 0.0}),
             ("overfull", hydrogens, {"OVERFULL_ELEMENTS": ()}),
             ("isoelectronic", hydrogens, {"ISOELECTRONIC_COST": None}),
             ("lighter", hydrogens, {"PERCEIVE_LIGHTER": {}}),
             ("cumulene", hydrogens, {"CUMULENE_COST": 0.0}), ("nitrogen", hydrogens, {"NITROGEN_GUESS": None}),
             ("ring", hydrogens, {"NITROGEN_IN_RING": False}),
             ("terminal", hydrogens, {"OVERFULL_TERMINALS": False, "DROPS_AT_ONCE": 1}),
             ("alkyne", hydrogens, {"SP_CHAIN_COST": None}), ("rehome", hydrogens, {"REHOME_COST": None}),
             ("hydroxy", hydrogens, {"HYDROXY_HALOGEN": None})]
    modules = {key: module for _, module, off in steps for key in off}
    shipped = {key: getattr(module, key) for key, module in modules.items()}
    levers = {name: {key: value for _, _, off in steps[n + 1:] for key, value in off.items()}
              for n, (name, _, _) in enumerate(steps)}
    results = {"model": model.tag, "views": model.views, "n": len(rows), "data": args.data, "split": args.split,
               "skip": args.skip}
    for name, change in levers.items():
        for key, value in {**shipped, **change}.items():
            setattr(modules[key], key, value)
        try:
            start = time.perf_counter()
            graphs = [read_graph(d, window, maps[k]) for k, d in enumerate(prediction.depictions)]
            ms = 1000 * (time.perf_counter() - start) / max(len(graphs), 1)
        finally:
            for key, value in shipped.items():
                setattr(modules[key], key, value)
        scores = score_rows(graphs, rows)
        flat = scores["by_corrugation"]["0-50 pm"]
        results[name] = r = {"total": scores["total"], "flat_total": flat["total"], "flat_n": flat["n"],
                             "precision": scores["precision"], "recall": scores["recall"],
                             "valid": float(np.mean([g.smiles is not None for g in graphs])),
                             "smiles_right": scores["smiles_right"],
                             "ms_a_graph": ms}
        print(f"  {name:<13} total {r['total']:.3f}  0-50 pm {r['flat_total']:.3f} (n {r['flat_n']})  "
              f"P {r['precision']:.3f}  R {r['recall']:.3f}  valid SMILES {r['valid']:.3f}  "
              f"SMILES right {r['smiles_right']:.3f}  {ms:.0f} ms a graph", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2, default=str))
    return results


if __name__ == "__main__":
    main()
