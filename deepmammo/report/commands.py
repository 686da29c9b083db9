"""`deepmammo tables`, `deepmammo figures`, `deepmammo report` and `deepmammo compare` (see
cli.py)."""
import json
import os

from deepmammo.engine import add_engine_argument
from deepmammo.report.paper import TABLE_SPECS


def _runs_args(p):
    p.add_argument("--runs", default="runs", help="runs folder (runs/<experiment>/<timestamp>/)")
    p.add_argument("--run", action="append", default=[], metavar="EXPERIMENT=FOLDER",
                   help="report this run folder for an experiment instead of its newest")
    p.add_argument("--alias", action="append", default=[], metavar="RUN_EXPERIMENT=ROW",
                   help="show the runs of one experiment in another's table rows, e.g. "
                        "demo-levynet=levynet")


def _pairs(items, option, form):
    out = {}
    for item in items:
        if "=" not in item:
            raise ValueError("%s takes %s, got %r" % (option, form, item))
        key, value = item.split("=", 1)
        out[key] = value
    return out


def _collect(args):
    from deepmammo.report.collect import collect_runs
    return collect_runs(args.runs, _pairs(args.run, "--run", "EXPERIMENT=FOLDER"),
                        _pairs(args.alias, "--alias", "RUN_EXPERIMENT=ROW"))


def register(subparsers):
    """Add this stage's subcommands to the `deepmammo` parser."""
    p = subparsers.add_parser("tables", help="Tables 1-3 beside the paper's (Markdown and CSV)")
    _runs_args(p)
    p.add_argument("--table", nargs="+", choices=tuple(TABLE_SPECS), default=list(TABLE_SPECS))
    p.add_argument("--out", default=os.path.join("reports", "tables"), help="output folder")
    p.add_argument("--decision", choices=("argmax", "val-threshold"), default="argmax",
                   help="test decisions: argmax (the paper's) or the threshold fitted on "
                        "validation (needs eval --threshold val)")
    p.set_defaults(func=run_tables)

    p = subparsers.add_parser("figures", help="the paper's figures from runs (PNG and PDF)")
    _runs_args(p)
    p.add_argument("--out", default=os.path.join("reports", "figures"), help="output folder")
    add_engine_argument(p, default=None,
                        help="engine for saliency maps (default: the one that evaluated the run)")
    p.add_argument("--saliency-count", type=int, default=5, help="images in Figure 5")
    p.set_defaults(func=run_figures)

    p = subparsers.add_parser("report", help="HTML report: tables, figures, provenance")
    _runs_args(p)
    p.add_argument("--name", default="latest", help="reports/<name>/index.html")
    p.add_argument("--out", help="report folder (default reports/<name>)")
    add_engine_argument(p, default=None,
                        help="engine for saliency and t-SNE (default: the run's eval engine)")
    p.add_argument("--ensembles", action="store_true",
                   help="past the paper: model and snapshot ensembles (own rows)")
    p.add_argument("--fusion", action="store_true",
                   help="past the paper: score each mass by its CC and MLO views (own rows)")
    p.add_argument("--tsne", action="store_true",
                   help="past the paper: t-SNE of the last pooled activations")
    p.add_argument("--crops", help="crops.csv (for --fusion and t-SNE colours; default: found "
                                   "from the dataset's build.json)")
    p.add_argument("--saliency-count", type=int, default=5)
    p.add_argument("--bootstrap", type=int, default=1000, help="replicates for extra rows")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--compare", action="append", default=[], metavar="A:B",
                   help="also test experiment A against B (beside the paper's claims), e.g. "
                        "demo-googlenet:demo-levynet")
    p.set_defaults(func=run_report)

    p = subparsers.add_parser(
        "compare", help="paired tests of two models on the same records (DeLong, McNemar, "
                        "patient bootstrap), or the paper's pairwise claims over a runs folder",
        description="With A and B: compare two predictions CSVs (as `deepmammo eval` writes "
                    "them), results JSONs (the snapshot chosen on validation) or run folders "
                    "(their test results), joined by record key. Without them: test the "
                    "paper's pairwise claims (and --pair) over the experiments under --runs, "
                    "over every seed of a repeated experiment.")
    p.add_argument("files", nargs="*", metavar="A B",
                   help="predictions CSV, results JSON or run folder of each model")
    _runs_args(p)
    p.add_argument("--pair", action="append", default=[], metavar="A:B",
                   help="claims mode: also compare experiment A with B")
    p.add_argument("--out", help="with A and B: the JSON file to write; claims mode: the "
                                 "folder (default reports/compare)")
    p.add_argument("--bootstrap", type=int, default=1000,
                   help="patient bootstrap replicates (0: no intervals)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.set_defaults(func=run_compare)


def run_tables(args):
    from deepmammo.report.tables import write_table
    runs = _collect(args)
    for name in args.table:
        table, _ = write_table(name, runs, args.out, args.decision)
        print(table.markdown())
    print("written to %s" % args.out)
    return 0


def run_figures(args):
    from deepmammo.report.run_figures import build_figures
    runs = _collect(args)
    notes = []
    made = build_figures(runs, args.out, args.engine, args.saliency_count, notes)
    for f in made:
        print("%s  %s" % (f.png, f.caption))
    for n in notes:
        print("not drawn: %s" % n)
    return 0


def run_report(args):
    from deepmammo.report.build import build_report
    extras = [name for name, on in (("ensembles", args.ensembles), ("fusion", args.fusion),
                                    ("tsne", args.tsne)) if on]
    out = args.out or os.path.join("reports", args.name)
    from deepmammo.report.claims import parse_pairs
    index = build_report(args.runs, out, engine=args.engine, runs=_collect(args),
                         extras=extras, crops_path=args.crops,
                         saliency_count=args.saliency_count, n_boot=args.bootstrap,
                         seed=args.seed, compare_pairs=parse_pairs(args.compare))
    # The tables that hold any of our numbers, on the terminal too (make demo ends with them).
    with open(os.path.join(out, "report.json")) as f:
        rows = json.load(f)["tables"]
    for name in ("table1", "table2", "table3", "runs", "claims"):
        if name in ("runs", "claims") or any(r["status"] == "ok" for r in rows[name]):
            with open(os.path.join(out, "tables", name + ".md")) as f:
                print(f.read())
    print("report: %s" % index)
    return 0


def _side(path):
    """A compare input: a file as given, or a run folder's test results JSON."""
    if os.path.isdir(path):
        from deepmammo.report.collect import results_files
        found = results_files(path).get("test")
        if not found:
            raise FileNotFoundError("no test results (deepmammo eval on test_lmdb) in run "
                                    "folder %s" % path)
        return found
    return path


def run_compare(args):
    from deepmammo.evaluate.compare import compare_files, format_result
    if len(args.files) == 2:
        a, b = (_side(p) for p in args.files)
        result = compare_files(a, b, args.out, args.bootstrap, args.seed)
        print("A: %s\nB: %s" % (a, b))
        print(format_result(result))
        if args.out:
            print("written to %s" % args.out)
        return 0
    if args.files:
        raise ValueError("compare takes two inputs (A B), or none to test the paper's claims "
                         "over --runs; got %d" % len(args.files))
    from deepmammo.report.claims import parse_pairs, write_claims
    out = args.out or os.path.join("reports", "compare")
    table, _ = write_claims(_collect(args), out, parse_pairs(args.pair), args.bootstrap,
                            args.seed)
    print(table.markdown())
    print("written to %s" % out)
    return 0
