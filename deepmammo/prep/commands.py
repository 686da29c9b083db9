"""Subcommands of the dataset stage: `deepmammo crops`, `deepmammo split`, `deepmammo lmdb`."""
import logging

from deepmammo.prep.build import AUGMENTS

log = logging.getLogger(__name__)


def _crops(args):
    from deepmammo.prep.crops import build_crops
    summary = build_crops(args.cases, args.out, padding=args.padding, edge=args.edge,
                          workers=args.workers)
    print(f"{summary['crops']} crops ({summary['benign']} benign, {summary['malignant']} "
          f"malignant, {summary['patients']} patients; {summary['clipped']} clipped at the "
          f"image border) -> {args.out}")
    if summary["skipped"]:
        print(f"{summary['skipped']} case rows skipped: see {args.out}/skipped.csv")


def _split(args):
    import os

    from deepmammo.prep.crops import read_crops
    from deepmammo.prep.split import format_table, make_split, write_split
    crops = read_crops(args.crops_dir)
    assignment = make_split(crops, mode=args.mode, seed=args.seed,
                            val_fraction=args.val_fraction, test_fraction=args.test_fraction)
    config = {"mode": args.mode, "seed": args.seed, "val_fraction": args.val_fraction,
              "test_fraction": args.test_fraction, "crops_dir": os.path.abspath(args.crops_dir)}
    table, shared = write_split(crops, assignment, args.out, config,
                                inputs=[os.path.join(args.crops_dir, "crops.csv")])
    print(format_table(table, shared))
    print(f"-> {args.out}")


def _lmdb(args):
    from deepmammo.prep.build import build_lmdbs
    record = build_lmdbs(args.crops_dir, args.splits, args.out, augment=args.augment,
                         seed=args.seed, grey=args.grey, size=args.size, workers=args.workers,
                         eval_resize=args.eval_resize)
    for split, c in record["counts"].items():
        print(f"{split:<6} {c['crops']:>6} crops -> {c['records']:>7} records "
              f"({c['benign']} benign, {c['malignant']} malignant)  sha256 "
              f"{c['content_sha256'][:16]}")
    print(f"-> {args.out} ({record['seconds']:.1f} s)")


def register(subparsers):
    """Add this stage's subcommands to the `deepmammo` parser."""
    p = subparsers.add_parser(
        "crops", help="crop every mass of a cases table (mask bbox + padding, 16-bit PNG)",
        description="Crop each abnormality of CASES.csv: the mask's bounding box plus fixed or "
                    "proportional padding, clipped at the image border (recorded). Writes "
                    "OUT/images/*.png at source bit depth, OUT/crops.csv, OUT/skipped.csv, "
                    "OUT/crops.json.")
    p.add_argument("cases", metavar="CASES.csv")
    p.add_argument("--padding", default="fixed:50",
                   help="fixed:N (N px per side; paper 'small context' = fixed:50) or "
                        "proportional:K (K x the mask box; paper 'large context' = "
                        "proportional:2). Default fixed:50")
    p.add_argument("--edge", choices=("clip", "code"), default="clip",
                   help="clip: clip at the image border (default); code: also trim saturated "
                        "scanner-border columns as the authors' script did")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    p.set_defaults(func=_crops)

    p = subparsers.add_parser(
        "split", help="train/val/test split by patient (val and test class-balanced)",
        description="Split the crops of DIR by patient, 80/10/10, validation and test each with "
                    "exactly as many benign as malignant crops; prints the table.")
    p.add_argument("crops_dir", metavar="DIR")
    p.add_argument("--out", required=True, metavar="SPLITS.csv")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mode", choices=("paper", "code"), default="paper",
                   help="paper: by patient, seeded (default); code: the authors' file-level "
                        "first-N-per-class split (no seed, patients may leak)")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--test-fraction", type=float, default=0.1)
    p.set_defaults(func=_split)

    p = subparsers.add_parser(
        "lmdb", help="build train/val/test LMDBs, the mean image, manifest and build.json",
        description="Write OUT/{train,val,test}_lmdb (Datum, 3 identical uint8 channels), "
                    "OUT/mean.binaryproto, OUT/manifest.csv and OUT/build.json.")
    p.add_argument("crops_dir", metavar="DIR")
    p.add_argument("--splits", required=True, metavar="SPLITS.csv")
    p.add_argument("--augment", choices=AUGMENTS, default="paper",
                   help="paper: 5 rotations (mean-pixel fill) x 5 random crops per training crop "
                        "(default); code: the authors' script (original + 4 rotations, grey 132, "
                        "centre 0.6 window); none: one resized, centre-cropped record per crop")
    p.add_argument("--grey", default="full-range",
                   help="16->8 bit mapping: full-range (default: v*255/(2^bits-1), what the "
                        "authors' TIFF->OpenCV path did), window[:LOW-HIGH] (per-crop "
                        "percentiles), od (DDSM optical density)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=224, help="record side in pixels (default 224)")
    p.add_argument("--eval-resize", choices=("crop", "squash"), default="crop",
                   help="validation/test (and training under --augment none): crop = shorter "
                        "side to SIZE then the centre (default, the paper); squash = SIZE x SIZE "
                        "ignoring the aspect ratio (the authors' convert_imageset call)")
    p.add_argument("--out", required=True, metavar="OUT")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    p.set_defaults(func=_lmdb)
