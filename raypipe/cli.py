"""The raypipe command line: one pair of functions per command, ``add_X`` (its options, their defaults taken
from the library) and ``run_X`` (what it does); jobs/*.py are thin wrappers. Every failure is one line on
stderr naming what and where (credentials redacted); a traceback only with ``-v``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict
from pathlib import Path

from raypipe.resources import EXAMPLE_MOLECULES, EXAMPLE_SCANS
from raypipe.storage import redact

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_BUSY, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 3, 130, 143
DESCRIPTION = ("raypipe identifies molecules in HR-AFM scans: stacks of constant-height images -> ball-and-stick "
               "depictions -> molecular graphs, on Ray.")
EXIT_STATUS = "exit status: 0 done; 1 failed (one line on stderr says why); 2 wrong command line; 130 interrupted"
LABEL_EXIT_STATUS = ("exit status: 0 done (bad scans are error rows, not failures); 1 the run failed (one line on "
                     "stderr says why; nothing was committed); 2 wrong command line; 3 another job holds the labels "
                     "table's writer lease (waited --lease-wait); 130 interrupted (Ctrl-C), 143 terminated (SIGTERM, "
                     "as Kubernetes stops a pod): the lease released, nothing committed unless the commit was done")


class Terminated(BaseException):
    """SIGTERM (a pod being stopped): unwinds the job like Ctrl-C, so the lease is released on the way out."""


def _terminate(signum, frame) -> None:
    raise Terminated()


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    def _get_help_string(self, action):  # "(default: None)" says nothing; a help that names its default is enough
        text = action.help or ""
        if action.default is None or action.default is False or "default" in text:
            return text
        return super()._get_help_string(action)


def _storage(args) -> dict | None:
    return {"endpoint_url": args.s3_endpoint} if getattr(args, "s3_endpoint", None) else None


def _say(args):
    """raypipe's progress lines (stderr), silent with -q."""
    if getattr(args, "quiet", False):
        return lambda *_: None
    return lambda text: print(text, file=sys.stderr, flush=True)


def _finite(value):
    """JSON has no NaN: an undefined figure (e.g. a corrugation bin without molecules) is null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _print_json(value) -> None:
    print(json.dumps(_finite(value), indent=2, allow_nan=False, default=str))


# --- depict --------------------------------------------------------------------------------------------
def add_depict(p) -> None:
    p.add_argument("--smiles", type=Path, default=EXAMPLE_MOLECULES,
                   help="a .smi file (SMILES [name] per line); default: the bundled examples")
    p.add_argument("--out", type=Path, default=Path("out/depictions"),
                   help="output folder: created, or replaced when raypipe wrote it; a folder holding anything else "
                        "is refused")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def run_depict(args) -> int:
    from raypipe.chem.sources import read_molecule_list
    from raypipe.reports.depict import write_depictions

    summary = write_depictions([(s, i) for i, s in read_molecule_list(args.smiles)], args.out)
    if args.json:
        _print_json(summary)
    else:
        print(f"depict: {summary['molecules']} molecules, {summary['ok']} depicted ({summary['errors']} errors), "
              f"{summary['total_exact']} read back exactly; {summary['out']}/sheet.png, graphs.jsonl")
    return EXIT_OK


# --- simulate ------------------------------------------------------------------------------------------
def add_simulate(p) -> None:
    from raypipe.simulation.ppm import SimulationSettings

    d = SimulationSettings()
    p.add_argument("--molecules", default=None,
                   help=".smi or .csv file (path or s3:// URI); default: RDKit's Data/NCI/first_5K.smi")
    p.add_argument("--out", required=True, help="output folder or s3:// prefix")
    p.add_argument("--parameter-sets", default="quam24", help="quam24, random:K or A,K;A,K (Å, N/m)")
    p.add_argument("--limit", type=int, default=None, help="only the first N molecules")
    p.add_argument("--shard-size", type=int, default=8, help="molecules per shard")
    p.add_argument("--seed", type=int, default=0, help="seed of conformers, parameter sets and distances")
    p.add_argument("--distance", type=float, default=d.distance, help="closest tip height above the top atom (Å)")
    p.add_argument("--distance-jitter", type=float, default=d.distance_jitter,
                   help="each stack's closest height varies by up to ± this (Å, multiple of 0.1)")
    p.add_argument("--grid-density", type=int, default=d.pix_per_angstrom,
                   help="force-field grid points per Å (8: ~1.6x faster, <2%% image difference)")
    p.add_argument("--compact", action="store_true",
                   help="store stacks as 8 bits per slice with each slice's range (a tenth of the bytes)")
    p.add_argument("--actors", type=int, default=None, help="simulation actors (default: one per CPU)")
    p.add_argument("--export-h5", type=Path, default=None, help="also write the rows to this HDF5 archive")
    p.add_argument("--address", default=None, help="Ray address (default: the job's cluster or a local Ray)")


def run_simulate(args) -> int:
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
                               num_actors=args.actors, compact=args.compact)
    _print_json({**asdict(summary), "stacks_per_second": round(summary.stacks_per_second, 3)})
    if args.export_h5:
        print(f"exported {export_archive(args.out, args.export_h5)} stacks to {args.export_h5}")
    return EXIT_OK


# --- train ---------------------------------------------------------------------------------------------
def add_train(p) -> None:
    p.add_argument("--config", type=Path, required=True, help="JSON or YAML TrainConfig (see jobs/configs/)")
    p.add_argument("--run-name", default=None, help="override the config's run_name (a new name = a fresh run)")
    p.add_argument("--steps", type=int, default=None, help="override the config's steps")
    p.add_argument("--num-workers", type=int, default=None, help="override the config's num_workers")
    p.add_argument("--storage-path", default=None, help="override the config's storage_path")
    p.add_argument("--data-uri", nargs="+", default=None,
                   help="override the config's data_uri (several: trained on as one pool of shards)")
    p.add_argument("--init-from", default=None, help="start from this model file's weights (continue a model)")
    p.add_argument("--local", action="store_true",
                   help="the plain torch loop in this process (CPU or one GPU, no Ray): long runs on small "
                        "machines, or a lent GPU machine")
    p.add_argument("--address", default=None, help="Ray address (default: the job's cluster or a local Ray)")


def run_train(args) -> int:
    from raypipe.training.run import TrainConfig

    cfg = TrainConfig.from_file(args.config, run_name=args.run_name, steps=args.steps, num_workers=args.num_workers,
                                storage_path=args.storage_path, init_from=args.init_from,
                                data_uri=args.data_uri[0] if args.data_uri and len(args.data_uri) == 1 else args.data_uri)
    if args.local:
        from raypipe.training.loop import train_local

        _print_json(train_local(cfg))
        return EXIT_OK
    from raypipe.pipelines.cluster import configure, ensure_ray
    from raypipe.pipelines.train import train

    cfg.check()  # before Ray starts: a typo is one line, not a retried worker failure
    configure(address=args.address)
    ensure_ray()
    result = train(cfg)
    _print_json({"run": cfg.run_name, "metrics": result.metrics, "error": str(result.error or "")})
    return EXIT_FAILED if result.error else EXIT_OK


# --- evaluate, calibrate ---------------------------------------------------------------------------------
def _add_data(p, split: str) -> None:
    p.add_argument("--data", required=True, help="simulated dataset (folder or s3:// prefix), e.g. the bundled "
                                                "raypipe/examples/sim-sample")
    p.add_argument("--model", default=None, help="model file (default: the shipped model)")
    p.add_argument("--split", default=split, help="train, val, test, or all (every row: a dataset simulated for a check)")
    p.add_argument("--limit", type=int, default=None, help="only the first N rows")
    p.add_argument("--views", type=int, default=None, choices=range(1, 5), metavar="1-4",
                   help="test-time augmentation: flips of each stack combined, one pass each (default: the model's own)")


def add_evaluate(p) -> None:
    _add_data(p, "test")
    p.add_argument("--gallery", type=Path, default=None, help="write a gallery PNG here")
    p.add_argument("--reliability", type=Path, default=None,
                   help="write the reliability diagram of the model's confidence (PNG) here")


def run_evaluate(args) -> int:
    from raypipe.training.evaluation import evaluate

    _print_json(evaluate(args.data, args.model, split=None if args.split == "all" else args.split, limit=args.limit,
                         gallery_path=args.gallery, reliability_path=args.reliability, views=args.views))
    return EXIT_OK


def add_calibrate(p) -> None:
    _add_data(p, "val")
    p.add_argument("--out", required=True, help="the calibrated model file to write")


def run_calibrate(args) -> int:
    from raypipe.training.evaluation import calibrate

    if args.split == "test":
        raise ValueError("calibrate on the val split (or another that is not used to report figures), not test")
    _print_json(calibrate(args.data, args.model, args.out, split=args.split, limit=args.limit, views=args.views))
    return EXIT_OK


# --- label, export ---------------------------------------------------------------------------------------
def add_label(p) -> None:
    from raypipe.labels.job import settings_fields

    d = settings_fields()
    p.add_argument("input", nargs="?", default=str(EXAMPLE_SCANS),
                   help="folder, file or s3:// prefix of scans; default: the bundled sample scans")
    p.add_argument("--out", default="out/labels", help="where the labels table's data lives (folder or s3://)")
    p.add_argument("--catalog", default=None,
                   help="Iceberg catalog: sqlite:///file.db, postgresql+psycopg2://user:pass@host/db or an http(s):// "
                        "REST catalog (default: RAYPIPE_CATALOG, else sqlite <out>/catalog.db)")
    p.add_argument("--table", default=d["table"], help="namespace.table in the catalog")
    p.add_argument("--model", default=None, help="model file, a path or s3:// URI (default or empty: the shipped model)")
    p.add_argument("--run-date", default=None, help="the run's date, YYYY-MM-DD (default: today)")
    p.add_argument("--settle", type=float, default=d["settle"],
                   help="seconds a unit's newest file must be old before it is labelled (still arriving)")
    p.add_argument("--relabel", choices=["all", "stale"], default=None,
                   help="relabel every unit, or those labelled by another model than this run's")
    p.add_argument("--retry-errors", action="store_true", help="relabel units whose rows failed before")
    p.add_argument("--lease-wait", type=float, default=d["lease_wait"],
                   help="seconds to wait for another job that is writing the same table")
    p.add_argument("--maintain", action="store_true",
                   help="after the commit, maintain the table under the same lease (raypipe maintain, its defaults)")
    p.add_argument("--lease-ttl", type=float, default=d["lease_ttl"],
                   help="seconds the writer lease lives without a heartbeat (a job frozen or cut off longer loses "
                        "it, and its commit is refused)")
    p.add_argument("--stall-timeout", type=float, default=d["stall_timeout"],
                   help="seconds without progress before the run is planned once more on the cluster as it is "
                        "(a node lost mid-run)")
    p.add_argument("--gallery", default=None,
                   help="folder of HTML gallery pages, one per run plus index.html (default: <out>-gallery/ beside "
                        "a local --out; none for s3://; '' for none)")
    p.add_argument("--fov", type=float, nargs="+", default=None, metavar="Å",
                   help="field of view of every stack, one length or x y in Å, over what files and sidecars say")
    p.add_argument("--estimate-fov", action="store_true",
                   help="for stacks of unknown scale, read them at several fields of view and keep the most "
                        "confident reading (8x the inference for those stacks)")
    p.add_argument("--candidates", default=None,
                   help="a .smi file of the molecules the scans may show: each row ranks them (a folder's "
                        "raypipe.json may name its own)")
    p.add_argument("--candidate-cache", default=None,
                   help="folder keeping candidate simulations between runs (default: <out>-candidates beside a "
                        "local --out)")
    p.add_argument("--library", default=None,
                   help="a library of known molecules (`raypipe library build`): each row names its best matches")
    p.add_argument("--shortlist", type=int, default=d["shortlist"],
                   help="library molecules the first stage keeps for the simulation match, per scan")
    p.add_argument("--screen", type=int, default=d["screen"],
                   help="library molecules the filter passes to the depiction screen, which keeps --shortlist "
                        "of them (--shortlist or less: no screen)")
    p.add_argument("--s3-endpoint", default=None, help="S3 endpoint URL (default: AWS_ENDPOINT_URL)")
    p.add_argument("--address", default=None, help="Ray address (default: the job's cluster or a local Ray)")
    p.add_argument("--json", action="store_true", help="print the run's summary as JSON")


def run_label(args) -> int:
    from raypipe.labels.job import LabelSettings, run
    from raypipe.pipelines.cluster import configure

    settings = LabelSettings(args.input, args.out, model=args.model or None, run_date=args.run_date,
                             catalog=args.catalog, table=args.table, storage_options=_storage(args),
                             settle=args.settle, relabel=args.relabel, retry_errors=args.retry_errors,
                             lease_wait=args.lease_wait, lease_ttl=args.lease_ttl, maintain=args.maintain,
                             stall_timeout=args.stall_timeout,
                             fov=tuple(args.fov) if args.fov else None, estimate_fov=args.estimate_fov,
                             candidates=args.candidates, candidate_cache=args.candidate_cache,
                             library=args.library, shortlist=args.shortlist, screen=args.screen,
                             gallery=args.gallery).checked()  # before anything starts
    configure(address=args.address)  # Ray starts only when there is something to label
    summary = run(settings, progress=_say(args), show_progress=not getattr(args, "quiet", False))
    print(json.dumps(summary.as_dict(), indent=2) if args.json else summary.report())
    return EXIT_OK


def add_export(p) -> None:
    p.add_argument("out", help="the labels table's --out (folder or s3://)")
    p.add_argument("destination", help="Parquet file to write (local path or s3:// URI)")
    p.add_argument("--catalog", default=None, help="as for label")
    p.add_argument("--table", default="raypipe.labels")
    p.add_argument("--as-of", default=None, help="a snapshot id or an ISO time: the table as it was then")
    p.add_argument("--s3-endpoint", default=None, help="S3 endpoint URL (default: AWS_ENDPOINT_URL)")


def run_export(args) -> int:
    from raypipe.labels.table import export_labels

    as_of = int(args.as_of) if args.as_of and args.as_of.isdigit() else args.as_of
    n = export_labels(args.out, args.destination, _storage(args), catalog=args.catalog, table=args.table, as_of=as_of)
    print(f"exported {n} rows to {redact(args.destination)}")
    return EXIT_OK


def add_maintain(p) -> None:
    from raypipe.labels.maintain import maintain_table

    d = _defaults(maintain_table)
    p.add_argument("out", help="the labels table's --out (folder or s3://)")
    p.add_argument("--catalog", default=None, help="as for label")
    p.add_argument("--table", default="raypipe.labels")
    p.add_argument("--keep-days", type=float, default=d["keep_days"],
                   help="expire snapshots older than this: read_labels(as_of=...) and export --as-of reach this far back")
    p.add_argument("--retain-last", type=int, default=d["retain_last"],
                   help="keep at least this many of the newest snapshots, however old")
    p.add_argument("--no-compact", action="store_true", help="do not rewrite small data files as bigger ones")
    p.add_argument("--lease-wait", type=float, default=d["lease_wait"],
                   help="seconds to wait for a labelling job that is writing the table")
    p.add_argument("--s3-endpoint", default=None, help="S3 endpoint URL (default: AWS_ENDPOINT_URL)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def run_maintain(args) -> int:
    from raypipe.labels.maintain import maintain_table

    summary = maintain_table(args.out, _storage(args), catalog=args.catalog, table=args.table,
                             keep_days=args.keep_days, retain_last=args.retain_last, compact=not args.no_compact,
                             lease_wait=args.lease_wait, progress=_say(args))
    print(json.dumps(summary.as_dict(), indent=2) if args.json else summary.report())
    return EXIT_OK


def _defaults(fn) -> dict:
    import inspect

    return {k: v.default for k, v in inspect.signature(fn).parameters.items()}


# --- library, identify ----------------------------------------------------------------------------------
def add_library(p) -> None:
    p.add_argument("action", choices=["build", "show"],
                   help="build: make (or continue) a library from MOLECULES; show: what a library at --out holds")
    p.add_argument("molecules", nargs="?", default=None,
                   help="build: a .smi (SMILES [name] per line) or .csv (smiles, id/name columns) file, path or s3://")
    p.add_argument("--out", required=True, help="the library's folder or s3:// prefix")
    p.add_argument("--simulate", action="store_true",
                   help="also make every molecule's simulations now (slower build; every scan then finds them ready)")
    p.add_argument("--shard-size", type=int, default=256, help="molecules per shard (the unit a re-run skips)")
    p.add_argument("--limit", type=int, default=None, help="only the first N molecules")
    p.add_argument("--s3-endpoint", default=None, help="S3 endpoint URL (default: AWS_ENDPOINT_URL)")
    p.add_argument("--address", default=None, help="Ray address (default: the job's cluster or a local Ray)")


def run_library(args) -> int:
    if args.action == "show":
        from raypipe.identify.library import Library

        _print_json(Library.open(args.out, _storage(args)).summary())
        return EXIT_OK
    if not args.molecules:
        raise ValueError("library build needs MOLECULES: a .smi or .csv file of SMILES")
    from raypipe.pipelines.cluster import configure
    from raypipe.pipelines.library import build_library

    configure(address=args.address)
    summary = build_library(args.molecules, args.out, simulate=args.simulate, shard_size=args.shard_size,
                            limit=args.limit, storage_options=_storage(args), progress=_say(args))
    print(summary.report())
    return EXIT_OK


def add_identify(p) -> None:
    p.add_argument("scan", help="one scan: a folder, file or archive.h5::id")
    p.add_argument("--library", default=None, help="a library built by `raypipe library build` (folder or s3://)")
    p.add_argument("--candidates", default=None, help="or a .smi file of the few molecules the scan may show")
    from raypipe.identify.defaults import SCREEN, SHORTLIST, TOP

    p.add_argument("--top", type=int, default=TOP, help="how many matches to print")
    p.add_argument("--shortlist", type=int, default=SHORTLIST,
                   help="molecules the first stage keeps for the simulation match")
    p.add_argument("--screen", type=int, default=SCREEN,
                   help="molecules the filter passes to the depiction screen, which keeps --shortlist of them "
                        "(--shortlist or less: no screen)")
    p.add_argument("--model", default=None, help="model file (default: the shipped model)")
    p.add_argument("--fov", type=float, nargs="+", default=None, metavar="Å", help="the scan's field of view")
    p.add_argument("--page", type=Path, default=None,
                   help="write a one-scan HTML page here (default: identify-<scan>.html in this folder)")
    p.add_argument("--json", action="store_true", help="print the ranking as JSON")
    p.add_argument("--s3-endpoint", default=None, help="S3 endpoint URL (default: AWS_ENDPOINT_URL)")


def run_identify(args) -> int:
    from raypipe.identify.search import identify_scan

    if (args.library is None) == (args.candidates is None):
        raise ValueError("give --library URI or --candidates FILE (one of them)")
    result = identify_scan(args.scan, library=args.library, candidates=args.candidates, top=args.top,
                           shortlist=args.shortlist, screen_size=args.screen, model=args.model, fov=args.fov,
                           storage_options=_storage(args),
                           progress=_say(args))
    from raypipe.reports.gallery import identification_page

    page = args.page or Path(f"identify-{Path(args.scan.split('::')[-1]).name or 'scan'}.html")
    identification_page(result, page)
    if args.json:
        _print_json(result.as_dict())
    else:
        print(result.report())
        print(f"page: {page}")
    return EXIT_OK


# name: (help, add, run, exit statuses)
COMMANDS = {
    "depict": ("depict molecules, extract their graphs back, score them", add_depict, run_depict, EXIT_STATUS),
    "simulate": ("simulate training shards with ppafm on Ray (resumes by shard)", add_simulate, run_simulate,
                 EXIT_STATUS),
    "train": ("train the model with Ray Train or the plain loop (resumes a run of the same name)", add_train,
              run_train, EXIT_STATUS),
    "evaluate": ("score a model on a split of simulated shards", add_evaluate, run_evaluate, EXIT_STATUS),
    "calibrate": ("fit a model's confidence (P(formula right)) on simulated stacks with known truth; writes a "
                  "calibrated copy", add_calibrate, run_calibrate, EXIT_STATUS),
    "label": ("label the new scans of an archive into the labels table (the nightly job)", add_label, run_label,
              LABEL_EXIT_STATUS),
    "export": ("write the labels table's current rows to one Parquet file", add_export, run_export, EXIT_STATUS),
    "maintain": ("compact the labels table's small files, expire snapshots older than --keep-days, remove "
                 "unreferenced files (under the writer lease)", add_maintain, run_maintain, LABEL_EXIT_STATUS),
    "library": ("build a library of known molecules for identification (resumes by shard), or show one",
                add_library, run_library, EXIT_STATUS),
    "identify": ("which known molecule is this scan? rank a library's (or a list's) molecules for one scan",
                 add_identify, run_identify, EXIT_STATUS),
}


def build_parser() -> argparse.ArgumentParser:
    from raypipe.version import __version__

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="also show Ray's own log lines and tracebacks")
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="only the summary and errors, no progress")
    parser = argparse.ArgumentParser(prog="raypipe", description=DESCRIPTION, formatter_class=_Formatter,
                                     parents=[common], epilog="`raypipe COMMAND --help` says what each command's "
                                                              "exit statuses mean")
    parser.add_argument("--version", action="version", version=f"raypipe {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (text, add, _, epilog) in COMMANDS.items():
        add(commands.add_parser(name, help=text, description=text, formatter_class=_Formatter, parents=[common],
                                epilog=epilog))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; any failure is one line on stderr with the exit status of its ``--help``."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version (0) or a wrong command line (2)
        return int(exc.code or 0)
    from raypipe.pipelines.cluster import keep_sigterm, native_stderr_to, set_verbose

    verbose = getattr(args, "verbose", False)
    set_verbose(verbose)
    run = COMMANDS[args.command][2]
    import signal
    import threading

    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if main_thread else None
    keep_sigterm(_terminate if main_thread else None)
    try:
        if verbose:
            return run(args)
        import tempfile

        log = Path(tempfile.gettempdir()) / f"raypipe-{args.command}-native.log"
        with native_stderr_to(log):  # Ray's C++ log lines: to a file, not the console
            return run(args)
    except KeyboardInterrupt:
        print("raypipe: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Terminated:
        print(f"raypipe {args.command}: terminated (SIGTERM)", file=sys.stderr)
        return EXIT_TERMINATED
    except Exception as exc:  # noqa: BLE001 - the command line reports, it does not crash
        if verbose:
            import traceback

            traceback.print_exc()
        from raypipe.labels.table import LeaseBusy

        print(f"raypipe {args.command}: error: {one_line(exc)}", file=sys.stderr)
        return EXIT_BUSY if isinstance(exc, LeaseBusy) else EXIT_FAILED
    finally:
        keep_sigterm(None)
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


def one_line(exc: BaseException) -> str:
    """What went wrong on one line, credentials redacted; a library's own exception keeps its type."""
    text = redact(str(exc)).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    if not isinstance(exc, (FileNotFoundError, FileExistsError, ValueError, RuntimeError, PermissionError)):
        first = f"{type(exc).__name__}: {first}"
    return first if len(first) <= 400 else first[:397] + "..."


if __name__ == "__main__":
    raise SystemExit(main())
