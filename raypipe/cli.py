"""The raypipe command line: one subcommand per job (jobs/*.py are thin wrappers).

Exit status: 0 done (bad scans become error rows, they do not fail a run); 1 the job failed (a missing
input or model, unreachable storage or catalog; one line on stderr says what and where); 2 a wrong
command line; 3 another job holds the labels table's writer lease; 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict
from pathlib import Path

from raypipe.storage import is_remote, redact

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
EXIT_FAILED, EXIT_USAGE, EXIT_BUSY, EXIT_INTERRUPTED = 1, 2, 3, 130
DESCRIPTION = ("raypipe identifies molecules in HR-AFM scans: stacks of constant-height images -> ball-and-stick "
               "depictions -> molecular graphs, on Ray.")
EPILOG = ("exit status: 0 done (bad scans are error rows, not failures); 1 the job failed (one line says why); "
          "2 wrong command line; 3 another job holds the labels table's lease; 130 interrupted")


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    def _get_help_string(self, action):  # "(default: None)" says nothing; a help that names its default is enough
        text = action.help or ""
        if action.default is None or action.default is False or "default" in text:
            return text
        return super()._get_help_string(action)


def _version() -> str:
    from raypipe import __version__

    return f"raypipe {__version__}"


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="also show Ray's own log lines")
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="only the summary and errors, no progress")
    parser = argparse.ArgumentParser(prog="raypipe", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=_Formatter, parents=[common])
    parser.add_argument("--version", action="version", version=_version())
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add = commands.add_parser

    def add_parser(name, **kwargs):
        return _add(name, formatter_class=_Formatter, parents=[common], epilog=EPILOG, **kwargs)

    commands.add_parser = add_parser  # every subcommand: defaults shown, -v/-q, the exit codes

    depict = commands.add_parser("depict", help="depict molecules, extract their graphs back, score them")
    depict.add_argument("--smiles", type=Path, default=EXAMPLES / "molecules.smi",
                        help="a .smi file (SMILES [name] per line); default: the bundled examples")
    depict.add_argument("--out", type=Path, default=Path("out/depictions"),
                        help="output folder: created, or replaced when raypipe wrote it; a folder holding "
                             "anything else is refused")

    sim = commands.add_parser("simulate", help="simulate training shards with ppafm on Ray")
    sim.add_argument("--molecules", default=None,
                     help=".smi or .csv file (path or s3:// URI); default: RDKit's Data/NCI/first_5K.smi")
    sim.add_argument("--out", required=True, help="output folder or s3:// prefix")
    sim.add_argument("--parameter-sets", default="quam24", help="quam24, random:K or A,K;A,K (Å, N/m)")
    sim.add_argument("--limit", type=int, default=None, help="only the first N molecules")
    sim.add_argument("--shard-size", type=int, default=8, help="molecules per shard")
    sim.add_argument("--seed", type=int, default=0, help="seed of conformers, parameter sets and distances")
    sim.add_argument("--distance", type=float, default=6.0, help="closest tip height above the top atom (Å)")
    sim.add_argument("--distance-jitter", type=float, default=0.0,
                     help="each stack's closest height varies by up to ± this (Å, multiple of 0.1)")
    sim.add_argument("--grid-density", type=int, default=10,
                     help="force-field grid points per Å (8: ~1.6x faster, <2%% image difference)")
    sim.add_argument("--actors", type=int, default=None, help="simulation actors (default: one per CPU)")
    sim.add_argument("--export-h5", type=Path, default=None, help="also write the rows to this HDF5 archive")
    sim.add_argument("--address", default=None, help="Ray address (default: the job's cluster or a local Ray)")
    train = commands.add_parser("train", help="train the GAN with Ray Train (resumes a run of the same name)")
    train.add_argument("--config", type=Path, required=True, help="JSON or YAML TrainConfig (see jobs/configs/)")
    train.add_argument("--run-name", default=None, help="override the config's run_name (a new name = a fresh run)")
    train.add_argument("--steps", type=int, default=None, help="override the config's steps")
    train.add_argument("--num-workers", type=int, default=None, help="override the config's num_workers")
    train.add_argument("--storage-path", default=None, help="override the config's storage_path")
    train.add_argument("--data-uri", default=None, help="override the config's data_uri")
    train.add_argument("--init-from", default=None, help="start from this model file's weights (continue a model)")
    train.add_argument("--local", action="store_true",
                       help="the plain torch loop in this process (CPU or one GPU, no Ray): long runs on small "
                            "machines, or a lent GPU machine")
    train.add_argument("--address", default=None, help="Ray address (default: the job's cluster or a local Ray)")

    evaluate = commands.add_parser("evaluate", help="score a model on a split of simulated shards")
    evaluate.add_argument("--data", required=True, help="simulated dataset (folder or s3:// prefix)")
    evaluate.add_argument("--model", default=None, help="model file (default: the shipped model)")
    evaluate.add_argument("--split", default="test",
                          help="train, val, test, or all (every row: a dataset simulated for a check)")
    evaluate.add_argument("--limit", type=int, default=None, help="only the first N rows")
    evaluate.add_argument("--gallery", type=Path, default=None, help="write a gallery PNG here")
    evaluate.add_argument("--views", type=int, default=None, choices=range(1, 5), metavar="1-4",
                          help="test-time augmentation: flips of each stack combined (default: the model's own)")
    evaluate.add_argument("--reliability", type=Path, default=None,
                          help="write the reliability diagram of the model's confidence (PNG) here")
    calibrate = commands.add_parser("calibrate", help="fit a model's confidence (P(formula right)) on simulated "
                                                      "stacks with known truth; writes a calibrated copy")
    calibrate.add_argument("--data", required=True, help="simulated dataset (folder or s3:// prefix)")
    calibrate.add_argument("--model", default=None, help="model file (default: the shipped model)")
    calibrate.add_argument("--split", default="val", help="the split to fit on (never the test split)")
    calibrate.add_argument("--limit", type=int, default=None, help="only the first N rows")
    calibrate.add_argument("--out", required=True, help="the calibrated model file to write")
    calibrate.add_argument("--views", type=int, default=None, choices=range(1, 5), metavar="1-4",
                           help="test-time augmentation of the copy: flips of each stack combined, each one pass "
                                "(default: the model's own; 1 is fastest)")
    label = commands.add_parser("label", help="label the new scans of an archive into the labels table (nightly job)")
    label.add_argument("input", nargs="?", default=str(EXAMPLES / "scans"),
                       help="folder, file or s3:// prefix of scans; default: the bundled sample scans")
    label.add_argument("--out", default="out/labels", help="where the labels table's data lives (folder or s3://)")
    label.add_argument("--catalog", default=None,
                       help="Iceberg catalog: sqlite:///file.db, postgresql+psycopg2://user:pass@host/db or an "
                            "http(s):// REST catalog (default: RAYPIPE_CATALOG, else sqlite <out>/catalog.db)")
    label.add_argument("--table", default="raypipe.labels", help="namespace.table in the catalog")
    label.add_argument("--model", default=None,
                       help="model file, a path or s3:// URI (default or empty: the shipped model)")
    label.add_argument("--run-date", default=None, help="the run's date, YYYY-MM-DD (default: today)")
    label.add_argument("--settle", type=float, default=60.0,
                       help="seconds a unit's newest file must be old before it is labelled (still arriving)")
    label.add_argument("--relabel", choices=["all", "stale"], default=None,
                       help="relabel every unit, or those labelled by another model than this run's")
    label.add_argument("--retry-errors", action="store_true", help="relabel units whose rows failed before")
    label.add_argument("--lease-wait", type=float, default=900.0,
                       help="seconds to wait for another job that is writing the same table")
    label.add_argument("--stall-timeout", type=float, default=600.0,
                       help="seconds without progress before the run is planned once more on the cluster as it is "
                            "(a node lost mid-run)")
    label.add_argument("--gallery", type=Path, default=None,
                       help="folder of HTML gallery pages, one per run plus index.html (default: <out>-gallery/ "
                            "beside a local --out; none for s3://)")
    label.add_argument("--s3-endpoint", default=None, help="S3 endpoint URL (default: AWS_ENDPOINT_URL)")
    label.add_argument("--address", default=None, help="Ray address (default: the job's cluster or a local Ray)")

    label.add_argument("--fov", type=float, nargs="+", default=None, metavar="Å",
                       help="field of view of every stack, one length or x y in Å, over what files and sidecars say")
    label.add_argument("--candidates", type=Path, default=None,
                       help="a .smi file of the molecules the scans may show: each row ranks them (a folder's "
                            "raypipe.json may name its own)")
    label.add_argument("--candidate-cache", default=None,
                       help="folder keeping candidate simulations between runs (default: <out>-candidates beside "
                            "a local --out)")
    label.add_argument("--estimate-fov", action="store_true",
                       help="for stacks of unknown scale, read them at several fields of view and keep the most "
                            "confident reading (8x the inference for those stacks)")
    label.add_argument("--json", action="store_true", help="print the run's summary as JSON")
    export = commands.add_parser("export", help="write the labels table's current rows to one Parquet file")
    export.add_argument("out", help="the labels table's --out (folder or s3://)")
    export.add_argument("destination", help="Parquet file to write (local path or s3:// URI)")
    export.add_argument("--catalog", default=None, help="as for label")
    export.add_argument("--table", default="raypipe.labels")
    export.add_argument("--as-of", default=None, help="a snapshot id or an ISO time: the table as it was then")
    export.add_argument("--s3-endpoint", default=None, help="S3 endpoint URL (default: AWS_ENDPOINT_URL)")
    return parser


def _label(args) -> int:
    import sys

    from raypipe.pipelines.cluster import configure
    from raypipe.pipelines.label import label_archive, parse_run_date

    parse_run_date(args.run_date)  # checked before anything starts
    if args.candidates is not None and not args.candidates.is_file():
        raise FileNotFoundError(f"{args.candidates}: no such candidates file")
    if args.fov is not None:
        from raypipe.scans.sidecar import parse_fov

        parse_fov(args.fov, "--fov")
    options = {"endpoint_url": args.s3_endpoint} if args.s3_endpoint else None
    configure(address=args.address)  # Ray starts only when there is something to label
    quiet = getattr(args, "quiet", False)
    say = (lambda *_: None) if quiet else (lambda text: print(text, file=sys.stderr, flush=True))
    summary = label_archive(args.input, args.out, model=args.model or None, run_date=args.run_date, storage_options=options,
                            catalog=args.catalog, table=args.table, settle=args.settle, relabel=args.relabel,
                            retry_errors=args.retry_errors, lease_wait=args.lease_wait, progress=say,
                            show_progress=not quiet, fov=args.fov,
                            candidates=str(args.candidates) if args.candidates else None,
                            estimate_fov=args.estimate_fov, stall_timeout=args.stall_timeout,
                            candidate_cache=args.candidate_cache or (None if is_remote(args.out) else
                                                                     args.out.rstrip("/") + "-candidates"))
    print(json.dumps(summary.as_dict(), indent=2) if args.json else summary.report())
    gallery = args.gallery or (None if is_remote(args.out) else
                               Path(args.out.rstrip("/")).parent / f"{Path(args.out.rstrip('/')).name}-gallery")
    if gallery is not None and summary.ok + summary.errors:
        from raypipe.model.files import model_config
        from raypipe.pipelines.table import read_labels
        from raypipe.reports import run_gallery

        rows = read_labels(args.out, options, catalog=args.catalog, table=args.table,
                           row_filter=f"run_id == '{summary.run_id}'").to_pylist()
        page = run_gallery(rows, gallery, summary.run_id, window=model_config(args.model or None, options).window)
        print(f"gallery of this run's {len(rows)} rows: {page} (all runs: {Path(gallery) / 'index.html'})")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand. Any failure is one line on stderr (credentials redacted) with the exit status
    of the module docs; a traceback only with ``-v``."""
    import sys

    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version (0) or a wrong command line (2)
        return int(exc.code or 0)
    from raypipe.pipelines.cluster import set_verbose

    verbose = getattr(args, "verbose", False)
    set_verbose(verbose)
    try:
        if verbose:
            return _run(args)
        import tempfile

        from raypipe.pipelines.cluster import native_stderr_to

        log = Path(tempfile.gettempdir()) / f"raypipe-{args.command}-native.log"
        with native_stderr_to(log):  # Ray's C++ log lines: to a file, not the console
            return _run(args)
    except KeyboardInterrupt:
        print("raypipe: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - the command line reports, it does not crash
        if verbose:
            import traceback

            traceback.print_exc()
        from raypipe.pipelines.table import LeaseBusy

        print(f"raypipe {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_BUSY if isinstance(exc, LeaseBusy) else EXIT_FAILED


def _one_line(exc: BaseException) -> str:
    """What went wrong on one line, credentials redacted; a library's own exception keeps its type."""
    text = redact(str(exc)).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    if not isinstance(exc, (FileNotFoundError, FileExistsError, ValueError, RuntimeError, PermissionError)):
        first = f"{type(exc).__name__}: {first}"
    return first if len(first) <= 400 else first[:397] + "..."


def _finite(value):
    """JSON has no NaN: an undefined figure (e.g. a corrugation bin without molecules) is null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _run(args) -> int:
    if args.command == "depict":
        from raypipe.chem.sources import read_molecule_list
        from raypipe.reports import write_depictions

        summary = write_depictions([(s, i) for i, s in read_molecule_list(args.smiles)], args.out)
        print(json.dumps(summary, indent=2))
    elif args.command == "simulate":
        from raypipe.pipelines.cluster import configure
        from raypipe.pipelines.simulate import simulate_dataset
        from raypipe.simulation.export import export_archive
        from raypipe.simulation.params import parse_parameter_sets
        from raypipe.simulation.ppm import SimulationSettings

        configure(address=args.address)
        summary = simulate_dataset(args.molecules, args.out, parameter_sets=parse_parameter_sets(args.parameter_sets),
                                   seed=args.seed, shard_size=args.shard_size, limit=args.limit,
                                   settings=SimulationSettings(distance=args.distance, pix_per_angstrom=args.grid_density,
                                                               distance_jitter=args.distance_jitter),
                                   num_actors=args.actors)
        print(json.dumps({**asdict(summary), "stacks_per_second": round(summary.stacks_per_second, 3)}, indent=2))
        if args.export_h5:
            print(f"exported {export_archive(args.out, args.export_h5)} stacks to {args.export_h5}")
    elif args.command == "train":
        from raypipe.model.run import TrainConfig

        cfg = TrainConfig.from_file(args.config, run_name=args.run_name, steps=args.steps,
                                    num_workers=args.num_workers, storage_path=args.storage_path,
                                    data_uri=args.data_uri, init_from=args.init_from)
        if args.local:
            from raypipe.model.loop import train_local

            print(json.dumps(train_local(cfg), indent=2, default=str))
            return 0
        from raypipe.pipelines.cluster import configure, ensure_ray
        from raypipe.pipelines.train import train

        cfg.validate()  # before Ray starts: a typo is one line, not a retried worker failure
        configure(address=args.address)
        ensure_ray()
        result = train(cfg)
        print(json.dumps({"run": cfg.run_name, "metrics": result.metrics, "error": str(result.error or "")},
                         indent=2, default=str))
        return 1 if result.error else 0
    elif args.command == "evaluate":
        from raypipe.evaluation import evaluate as run_evaluation

        result = run_evaluation(args.data, args.model, split=None if args.split == "all" else args.split,
                                limit=args.limit, gallery_path=args.gallery, reliability_path=args.reliability,
                                views=args.views)
        print(json.dumps(_finite(result), indent=2, allow_nan=False))
    elif args.command == "calibrate":
        from raypipe.evaluation import calibrate

        if args.split == "test":
            raise ValueError("calibrate on the val split (or another that is not used to report figures), not test")
        print(json.dumps(_finite(calibrate(args.data, args.model, args.out, split=args.split, limit=args.limit,
                                           views=args.views)), indent=2))
    elif args.command == "label":
        return _label(args)
    elif args.command == "export":
        from raypipe.pipelines.table import export_labels

        options = {"endpoint_url": args.s3_endpoint} if args.s3_endpoint else None
        as_of = int(args.as_of) if args.as_of and args.as_of.isdigit() else args.as_of
        n = export_labels(args.out, args.destination, options, catalog=args.catalog, table=args.table, as_of=as_of)
        print(f"exported {n} rows to {redact(args.destination)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
