"""`deepmammo export` and `deepmammo model-card`."""


def register(subparsers):
    """Add `export` and `model-card` to the `deepmammo` parser."""
    from deepmammo.export.export import FORMATS, TOLERANCE
    p = subparsers.add_parser(
        "export", help="a snapshot and its deploy net to ONNX and TorchScript (checked)",
        description="Export a run's snapshot (the one chosen on validation unless "
                    "--snapshot) to ONNX and TorchScript, with the preprocessing in the file's "
                    "metadata and a model card beside it. Each file is compared with the "
                    "engine on the run's test records before it is written and refused above "
                    f"the tolerance ({TOLERANCE:g} in p(malignant)).")
    p.add_argument("run", nargs="?", metavar="RUN", help="run folder (runs/<experiment>/latest)")
    p.add_argument("--snapshot", help="snapshot of the run (file, name or iteration)")
    p.add_argument("--model", help="deploy prototxt (without a run)")
    p.add_argument("--weights", help="caffemodel (without a run)")
    p.add_argument("--format", dest="formats", nargs="+", choices=FORMATS,
                   default=list(FORMATS), help="what to write (default: both)")
    p.add_argument("--out", help="output stem: STEM.onnx, STEM.pt, STEM.model-card.md "
                                 "(default: RUN/export/<snapshot name>)")
    p.add_argument("--tolerance", type=float, default=TOLERANCE,
                   help=f"largest difference from the engine allowed (default {TOLERANCE:g})")
    p.add_argument("--check-records", type=int, help="check on the first N test records "
                                                      "only (default: all)")
    p.set_defaults(func=run_export)

    p = subparsers.add_parser(
        "model-card", help="a run's model card (data, training, metrics, limits), from its "
                           "records",
        description="Write RUN/model-card.md and RUN/model-card.json (or into --out) from the "
                    "run's config, provenance, evaluation results and dataset records.")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--snapshot", help="describe this snapshot (default: the chosen one)")
    p.add_argument("--out", metavar="DIR", help="folder to write into (default: the run's)")
    p.set_defaults(func=run_card)


def run_export(args):
    from deepmammo.export.export import export
    run = None
    if args.run:
        if args.model or args.weights:
            raise ValueError("give a run folder, or --model and --weights, not both")
        from deepmammo.classify.model import TrainedRun
        run = TrainedRun(args.run, args.snapshot)
    elif not (args.model and args.weights):
        raise ValueError("export needs a run folder, or --model DEPLOY and --weights "
                         "CAFFEMODEL")
    done = export(run, args.model, args.weights, out=args.out, formats=args.formats,
                  tolerance=args.tolerance, max_records=args.check_records)
    for d in done:
        print(f"{d['format']:<11} {d['path']}  (largest difference from the engine "
              f"{d['max_abs_diff']:.3g} on {d['checked']})")
    if run is not None:
        print("model card: " + done[0]["path"].rsplit(".", 1)[0] + ".model-card.md")
    return 0


def run_card(args):
    from deepmammo.report.model_card import write_card
    path, _ = write_card(args.run, args.out, snapshot=args.snapshot)
    print(f"-> {path}")
    return 0
