"""Stage 1 of identification (the library filter) alone, on validation stacks: the rank of the truth in the
whole library per feature of the filter and for its mix; with ``--fit``, the mix itself.

    python bench/tune_filter.py --data ../shared/sim/catalog-r4-tail2 --library out/library/catalog --n 800 --fit

``--fit`` fits the weights of :func:`raypipe.identify.search.filter_scores` (``raypipe/identify/filter.json``)
as a conditional logit: the softmax over the whole library of the features' linear mix, trained to put the
truth first (L-BFGS, similarities weighted >= 0 and differences <= 0, so that a molecule's own clean reading
always scores best). It reports a two-fold cross-validation (fitted on half the stacks, ranked on the other
half) and writes the weights fitted on all of them with those figures.

It also times the filter on the library repeated ``--copies`` times (~100,000 molecules by default).

``--data``: simulated stacks of molecules that are in ``--library`` (e.g. shards of the training catalogue
the model never trained on). Never the bench's test-split stacks (``bench_identify.py``), nor a reserved set.
The model's readings are kept in ``--readings`` (npz) so that a second run scores variants in seconds.
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


def readings(data: str, n: int, every: int, model) -> list[dict]:
    from raypipe.identify.search import scan_shape
    from raypipe.model.reading import read_one
    from raypipe.scans.preprocess import preprocess
    from raypipe.simulation.export import read_shard_rows, row_to_stack

    out, seen, k = [], set(), 0
    window = model.config.window
    for row in read_shard_rows(data):
        if row["smiles"] in seen:
            continue
        seen.add(row["smiles"])
        k += 1
        if (k - 1) % every:
            continue
        stack = row_to_stack(row)
        x = preprocess(stack, n_slices=model.config.n_slices, window=window)
        p = model.infer(x[None])
        r = read_one(p.depictions[0], window, centres=p.centre_map(0), margins=p.margin_stats(0),
                     calibration=model.calibration, counts=p.count_of(0))
        out.append({"truth": row["smiles"], "elements": [a.element for a in r.graph.atoms],
                    "positions": np.asarray(r.graph.positions), "bonds": list(r.graph.bonds),
                    "confidence": float(r.confidence or 0.0), "spread": scan_shape(x, window),
                    "scale_known": bool(stack.metadata.get("fov")), "formula": r.formula,
                    "depiction": p.depictions[0]})
        print(len(out), row["smiles"], r.formula, f"{out[-1]['confidence']:.3f}", flush=True)
        if len(out) >= n:
            break
    return out


def ranks(library, items: list[dict], scorer) -> np.ndarray:
    index = {s: i for i, s in enumerate(library.smiles)}
    out = []
    for it in items:
        s = scorer(library, query_of(library, it))
        t = index.get(it["truth"])
        out.append(int((s > s[t]).sum()) + 1 if t is not None else 10**9)
    return np.array(out)


HIDDEN = 8  # the fit's hidden units (0: the linear mix alone)
SIMILARITIES = ("layout", "layout_skeleton", "graph", "graph_of_reading", "graph_of_molecule", "composition",
                "shape")


def query_of(library, it: dict):
    from raypipe.identify.search import Query

    class G:  # the reading's graph, as Query.of reads it
        atoms = [type("A", (), {"element": e}) for e in it["elements"]]
        bonds = it["bonds"]
        positions = it["positions"]
    q = Query.of(G, it["confidence"], None, library.window, it["scale_known"])
    q.spread = tuple(it["spread"])
    return q


def fit(library, items: list[dict], l2: float = 1e-5, seed: int = 0, hidden: int = HIDDEN) -> dict:
    """The filter fitted on ``items`` (module docs): the linear weights of its features and, with ``hidden``
    units, a hidden layer monotone in each feature (softplus units of the standardised features, their
    inputs oriented so that more is better and weighted >= 0, summed with weights >= 0), with a two-fold
    cross-validation's ranks."""
    import torch

    from raypipe.identify.search import CONFIDENT, filter_features

    index = {s: i for i, s in enumerate(library.smiles)}
    truth = torch.tensor([index[it["truth"]] for it in items])
    names = None
    rows = []
    for it in items:
        f = filter_features(library, query_of(library, it))
        names = names or list(f)
        rows.append(np.stack([f[n] for n in names], axis=1).astype(np.float32))
    x = torch.from_numpy(np.stack(rows))
    del rows
    # a floor on the scale: a feature the stacks hardly vary (an element none of them has) keeps a small weight
    sd = x.std(dim=(0, 1)).clamp(min=0.02)
    centre = x.mean(dim=(0, 1))
    sign = torch.tensor([1.0 if n.removesuffix(CONFIDENT) in SIMILARITIES else -1.0 for n in names])
    xs = (x - centre) / (sd * sign)  # every feature oriented so that more is better
    del x
    softplus = torch.nn.functional.softplus

    def logits(p, idx):
        out = xs[idx] @ softplus(p["linear"])
        if hidden:
            out = out + softplus(xs[idx] @ softplus(p["weight"]) + p["bias"]) @ softplus(p["out"])
        return out

    def train(idx):
        g = torch.Generator().manual_seed(seed)
        p = {"linear": torch.zeros(len(names)), "weight": torch.randn(len(names), hidden, generator=g) * 0.1 - 2,
             "bias": torch.zeros(hidden), "out": torch.full((hidden,), -2.0)}
        for v in p.values():
            v.requires_grad_()
        opt = torch.optim.LBFGS(list(p.values()), max_iter=300 if not hidden else 200, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(logits(p, idx), truth[idx])
            loss = loss + l2 * softplus(p["linear"]).square().sum()
            if hidden:
                loss = loss + 1e-4 * sum(p[k].square().sum() for k in ("weight", "bias", "out"))
            loss.backward()
            return loss
        opt.step(closure)
        return {k: v.detach() for k, v in p.items()}

    def ranks(idx, p):
        with torch.no_grad():
            s = logits(p, idx)
            t = s[torch.arange(len(idx)), truth[idx]][:, None]
            return ((s > t).sum(dim=1) + 1).numpy()

    perm = torch.randperm(len(items), generator=torch.Generator().manual_seed(seed))
    folds = [perm[: len(items) // 2], perm[len(items) // 2:]]
    cv = np.concatenate([ranks(folds[1 - k], train(folds[k])) for k in range(2)])
    p = train(torch.arange(len(items)))
    w = softplus(p["linear"]) / (sd * sign)  # in the features' own units (the offsets cancel in a softmax)
    out = {"weights": {n: round(float(v), 4) for n, v in zip(names, w) if abs(float(v)) > 1e-4}}
    if hidden:
        r = lambda t: [round(float(v), 5) for v in t]  # noqa: E731
        out["hidden"] = {"features": names, "centre": r(centre), "scale": r(sd * sign),
                         "weight": [r(row) for row in softplus(p["weight"])], "bias": r(p["bias"]),
                         "out": r(softplus(p["out"]))}
    return {**out, "cross_validated": report("cross-validated fit", cv)}


def report(name: str, r: np.ndarray) -> dict:
    row = {"variant": name, "n": len(r), "top1": float((r <= 1).mean()), "top5": float((r <= 5).mean()),
           "top20": float((r <= 20).mean()), "top50": float((r <= 50).mean()), "top100": float((r <= 100).mean()),
           "top150": float((r <= 150).mean()), "median": float(np.median(r))}
    print(json.dumps(row), flush=True)
    return row


def timing(library, items: list[dict], copies: int, n: int = 20) -> dict:
    """Seconds a scan of the filter (features, mix, shortlist) over ``library`` repeated ``copies`` times."""
    import dataclasses

    from raypipe.identify import search

    fields = [f.name for f in dataclasses.fields(library)  # the data columns, not their derived caches
              if isinstance(getattr(library, f.name), np.ndarray) and not f.name.startswith("_")]
    big = dataclasses.replace(library, **{f: np.concatenate([getattr(library, f)] * copies) for f in fields},
                              _skeleton=None, _bits=None)
    search.shortlist(big, query_of(big, items[0]))  # the library's derived columns, computed once
    start = time.perf_counter()
    for it in items[:n]:
        search.shortlist(big, query_of(big, it), search.SCREEN)
    row = {"variant": "time", "molecules": len(big), "seconds_per_scan": (time.perf_counter() - start) / n}
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/sim/catalog-r4-tail2")
    parser.add_argument("--library", default="out/library/catalog")
    parser.add_argument("--n", type=int, default=800)
    parser.add_argument("--every", type=int, default=2, help="one molecule in EVERY of --data")
    parser.add_argument("--readings", type=Path, default=Path("out/tune-filter-readings.pkl"))
    parser.add_argument("--out", type=Path, default=Path("out/tune-filter.json"))
    parser.add_argument("--fit", action="store_true", help="fit the filter's weights and write --weights")
    parser.add_argument("--copies", type=int, default=14,
                        help="time the filter on the library repeated this many times (14: ~100,000 molecules)")
    parser.add_argument("--hidden", type=int, default=HIDDEN, help="hidden units of the fit (0: linear)")
    parser.add_argument("--weights", type=Path,
                        default=Path(__file__).resolve().parents[1] / "raypipe" / "identify" / "filter.json")
    args = parser.parse_args()

    from raypipe.identify import search
    from raypipe.identify.library import Library
    from raypipe.model.inference import load_model

    model = load_model(None, device="cpu")
    library = Library.open(args.library, window=model.config.window)
    if args.readings.exists():  # the readings of an earlier run, with the settings they were made with
        saved = pickle.loads(args.readings.read_bytes())
        items, args.data, args.every = saved["items"], saved["data"], saved["every"]
    else:
        start = time.perf_counter()
        items = readings(args.data, args.n, args.every, model)
        print(f"{len(items)} readings in {time.perf_counter() - start:.0f} s")
        args.readings.parent.mkdir(parents=True, exist_ok=True)
        args.readings.write_bytes(pickle.dumps({"items": items, "data": args.data, "every": args.every}))
    rows = []
    for term in ("layout", "layout_skeleton", "composition", "graph", "shape", "logit"):
        rows.append(report(term, ranks(library, items, lambda lib, q, t=term: search.filter_scores(lib, q)[t])))
    rows.append(timing(library, items, args.copies))
    if args.fit:
        result = fit(library, items, hidden=args.hidden)
        document = {"model": model.tag, "data": args.data, "stacks": len(items), "every": args.every,
                    "library_molecules": len(library),
                    "fitted_by": "bench/tune_filter.py --fit", **result,
                    "filter_in_place": rows[-1]}
        args.weights.write_text(json.dumps(document, indent=1) + "\n")
        print(f"wrote {args.weights}")
        rows.append({"fit": document})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
