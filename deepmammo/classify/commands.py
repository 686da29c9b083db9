"""`deepmammo classify RUN INPUT`: p(malignant) of new masses from a trained run."""
import logging
import os

from deepmammo.engine import add_engine_argument, add_precision_argument

log = logging.getLogger(__name__)


def register(subparsers):
    """Add `classify` to the `deepmammo` parser."""
    p = subparsers.add_parser(
        "classify", help="classify new masses with a trained run (p(malignant), decision)",
        description="Apply a trained run to new masses: INPUT is one mammogram (DDSM .LJPEG "
                    "with its .ics, DICOM, TIFF, PNG) with its mass given by --mask, --overlay "
                    "or --box; or a cases CSV in the project's format; or a folder of crops. "
                    "Each mass is cropped, grey-mapped and resized with the recipe of the "
                    "run's dataset (its build.json) and scored by the snapshot validation "
                    "chose; the decision is at the threshold fitted on validation.")
    p.add_argument("run", metavar="RUN", help="run folder (runs/<experiment>/latest or "
                                              "runs/<experiment>/<timestamp>)")
    p.add_argument("input", metavar="INPUT",
                   help="a mammogram, a cases CSV, or a folder of crops")
    mass = p.add_mutually_exclusive_group()
    mass.add_argument("--mask", help="mask image of the mass (nonzero = mass), the image's size")
    mass.add_argument("--overlay", help="DDSM .OVERLAY (default for a .LJPEG: the one beside "
                                        "it); every outline in it unless --abnormality")
    mass.add_argument("--box", help="the mass's bounding box r0,c0,r1,c1 (rows and columns, "
                                    "half-open, as cases.csv's bbox)")
    p.add_argument("--abnormality", type=int, help="with an .OVERLAY: this abnormality only")
    p.add_argument("--ics", help="the DDSM case's .ics (default: the one beside the .LJPEG)")
    p.add_argument("--bits", type=int, help="bits per pixel of the images (default: the .ics, "
                                            "DICOM BitsStored, crops.csv, else 8 or 16 by the "
                                            "file's sample size)")
    p.add_argument("--scanner", help="DDSM scanner (for the od grey mapping), e.g. DBA")
    p.add_argument("--grey", help="refuse unless the run trained with this grey mapping")
    p.add_argument("--snapshot", help="a snapshot of the run (file, name or iteration; "
                                      "default: the one chosen on validation)")
    p.add_argument("--oversample", action="store_true",
                   help="average the 10 crops of pycaffe's Classifier (corners, centre, mirrors)")
    p.add_argument("--saliency", metavar="DIR", help="write a saliency figure per mass here")
    p.add_argument("--save-inputs", metavar="DIR",
                   help="write each mass's record (the LMDB record it would be) as a PNG here")
    p.add_argument("--out", help="results file: .csv (one row per mass) or .json")
    add_engine_argument(p, help="our engine (torch) or real BVLC pycaffe (caffe)")
    p.add_argument("--gpu", type=int, help="GPU id (default: CPU)")
    add_precision_argument(p)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, help="processes preparing the inputs (default: all "
                                               "cores)")
    p.set_defaults(func=run_classify)


def tasks_for(args, run):
    """The tasks INPUT and the mass options name; (tasks, many: several inputs?)."""
    from deepmammo.classify import inputs
    path = args.input
    single = any(v is not None for v in (args.mask, args.overlay, args.box, args.ics,
                                         args.abnormality))
    if os.path.isdir(path):
        if single:
            raise inputs.InputError(f"{path}: --mask, --overlay, --box, --ics and "
                                    "--abnormality go with one mammogram, not a folder")
        return inputs.crops_tasks(path, run.recipe, args.bits, args.scanner), True
    if path.lower().endswith(".csv"):
        if single:
            raise inputs.InputError(f"{path}: a cases CSV names each mass's mask itself")
        return inputs.cases_tasks(path), True
    task = inputs.image_task(path, mask=args.mask, overlay=args.overlay, box=args.box,
                             abnormality=args.abnormality, ics=args.ics, bits=args.bits,
                             scanner=args.scanner)
    return [task], len(task.masses) > 1


def run_classify(args):
    from deepmammo.classify import classify as cl
    from deepmammo.classify.model import TrainedRun
    run = TrainedRun(args.run, args.snapshot)
    run.check_grey(args.grey)
    tasks, many = tasks_for(args, run)
    rows, seconds = cl.classify(run, tasks, engine=args.engine, gpu=args.gpu,
                                precision=args.precision, batch_size=args.batch_size,
                                oversample=args.oversample, workers=args.workers,
                                save_inputs=args.save_inputs, saliency=args.saliency)
    bad = [r for r in rows if r["error"]]
    if bad and not many:
        raise ValueError(bad[0]["error"])
    for r in bad:
        log.warning("not classified: %s: %s", r["mass"], r["error"])
    if len(bad) == len(rows):
        raise ValueError(f"{args.input}: none of its {len(rows)} masses could be classified "
                         f"(first: {bad[0]['error']})")
    if args.out:
        cl.write_results(rows, args.out, run, seconds)
    print(cl.table(rows, run))
    done = len(rows) - len(bad)
    print(f"{done} mass{'es' if done != 1 else ''} classified in {seconds:.2f} s"
          + (f"; {len(bad)} not (see the warnings above)" if bad else "")
          + (f" -> {args.out}" if args.out else ""))
    return 0
