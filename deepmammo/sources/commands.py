"""Subcommands of this stage for the `deepmammo` command (see deepmammo/cli.py):

    deepmammo ingest {ddsm,cbis,tiff,manifest} PATH --out cases.csv
    deepmammo synth {ddsm,cbis,tiff} --out DIR --patients N --seed S
"""
import logging

from deepmammo.sources.ingestion import KINDS

log = logging.getLogger(__name__)


def _size(text):
    try:
        rows, cols = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--size must look like ROWSxCOLS (e.g. 600x400), not {text!r}") from None
    return rows, cols


def cmd_ingest(args):
    from deepmammo.sources.ingestion import IngestError, ingest, summary_text
    try:
        report = ingest(args.kind, args.path, args.out, strict=args.strict, bwc=args.bwc,
                        include_calc=args.include_calc, decode_check=args.decode_check)
    except IngestError as exc:
        raise ValueError(f"--strict: {exc}") from None
    print(summary_text(report))
    return 0


def cmd_synth(args):
    from deepmammo.sources.synth import make_archive
    truth = make_archive(args.kind, args.out, patients=args.patients, seed=args.seed,
                         size=_size(args.size), layout=args.layout, quirks=not args.no_quirks)
    malignant = sum(1 for t in truth if t["label"] == 1)
    benign = sum(1 for t in truth if t["label"] == 0)
    print(f"{args.kind} archive with {args.patients} patients, {len(truth)} lesion views "
          f"({malignant} malignant, {benign} benign, {len(truth) - malignant - benign} "
          f"without a label) -> {args.out}")
    return 0


def register(subparsers):
    """Add this stage's subcommands to the `deepmammo` parser."""
    p = subparsers.add_parser(
        "ingest", help="read an archive (DDSM, CBIS-DDSM, TIFF layout, manifest) into cases.csv",
        description="One row per mass (and calcification with --include-calc) with a mask "
                    "image for every row. Beside OUT: OUT.skipped.csv (every case not ingested "
                    "or ingested after a fix, and why) and OUT.report.json (counts).")
    p.add_argument("kind", choices=KINDS)
    p.add_argument("path", help="archive folder (manifest: the manifest CSV)")
    p.add_argument("--out", required=True, help="cases.csv to write")
    p.add_argument("--strict", action="store_true", help="stop at the first problem")
    p.add_argument("--bwc", choices=("benign", "exclude"), default="benign",
                   help="BENIGN_WITHOUT_CALLBACK: count as benign (default) or exclude")
    p.add_argument("--include-calc", action="store_true", help="also ingest calcifications")
    p.add_argument("--decode-check", action="store_true",
                   help="DDSM: fully decode every .LJPEG (default: header and end-marker check)")
    p.set_defaults(func=cmd_ingest)

    p = subparsers.add_parser(
        "synth", help="write a synthetic archive in the DDSM, CBIS-DDSM or TIFF-layout format",
        description="Deterministic per seed; benign masses round/oval and sharp, malignant "
                    "irregular/spiculated, with overlap. Writes DIR/synth_truth.json too.")
    p.add_argument("kind", choices=("ddsm", "cbis", "tiff"))
    p.add_argument("--out", required=True, help="archive folder to create")
    p.add_argument("--patients", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", default="600x400",
                   help="ROWSxCOLS of each mammogram (DDSM full size: 4696x3024)")
    p.add_argument("--layout", choices=("csv", "tcia"), default="csv",
                   help="CBIS: folders as the CSV paths say, or the TCIA download tree")
    p.add_argument("--no-quirks", action="store_true",
                   help="leave out the source quirks (swapped crop/mask, short mask, ...)")
    p.set_defaults(func=cmd_synth)
