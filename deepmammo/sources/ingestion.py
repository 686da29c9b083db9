"""Turn an archive on disk into cases.csv, with a report of everything not ingested.

Each source module has `collect(root, ctx)`: it walks its archive and calls `ctx.add_case`
for every abnormality, `ctx.skip` / `ctx.exclude` for what it cannot or must not use, and
`ctx.fixed` for what it used after resolving a problem. Nothing is dropped silently."""
import collections
import contextlib
import json
import logging
import os
import time

from deepmammo.atomic import atomic_path, check_output_file, check_output_folder, write_text
from deepmammo.sources import cases as cases_mod
from deepmammo.sources import images

log = logging.getLogger(__name__)

KINDS = ("ddsm", "cbis", "tiff", "manifest")


class IngestError(ValueError):
    """Raised with --strict at the first problem; the message names the file."""


class OutputWriteError(OSError):
    """Writing an output (a mask PNG) failed: the ingest stops, it is not a problem of a case."""


class IngestContext:
    """Collects rows and report entries; enforces the policy options."""

    def __init__(self, out_csv, strict=False, bwc="benign", include_calc=False,
                 decode_check=False):
        if bwc not in ("benign", "exclude"):
            raise ValueError(f"--bwc must be 'benign' or 'exclude', not {bwc!r}")
        self.out_csv = os.path.abspath(os.fspath(out_csv))
        self.out_dir = os.path.dirname(self.out_csv)
        self.mask_dir = os.path.splitext(self.out_csv)[0] + "_masks"
        # Masks are drawn into a temporary folder that becomes mask_dir only when the whole
        # ingest succeeds (rows name their final path); set by ingest().
        self.mask_write_dir = self.mask_dir
        self.masks_written = 0
        self.strict = strict
        self.bwc = bwc
        self.include_calc = include_calc
        self.decode_check = decode_check
        self.rows = []
        self.report = []
        self._ids = set()

    # -- report ------------------------------------------------------------------------
    # Every entry: status, case, the file concerned, a short `problem` (counted in the
    # report) and the full reason.
    def _entry(self, status, case, file, reason, problem):
        self.report.append({"status": status, "case": case, "file": file or "",
                            "problem": problem, "reason": reason})

    def skip(self, case, file, reason, problem):
        """A case (or file) that could not be ingested because of a problem with the input."""
        if self.strict:
            raise IngestError(f"{file or case}: {reason}")
        log.warning("skipped %s: %s", case, reason)
        self._entry("skipped", case, file, reason, problem)

    def exclude(self, case, file, reason, problem):
        """A case left out by policy (pathology, lesion type); never an error."""
        self._entry("excluded", case, file, reason, problem)

    def fixed(self, case, file, reason, problem):
        """A case ingested after resolving a problem in the source."""
        if self.strict:
            raise IngestError(f"{file or case}: {reason}")
        log.info("fixed %s: %s", case, reason)
        self._entry("fixed", case, file, reason, problem)

    @contextlib.contextmanager
    def guard(self, case, file):
        """Whatever goes wrong with one case's input lands in the report and the ingest goes
        on (with --strict it stops); a failing output write stops the ingest."""
        try:
            yield
        except (IngestError, OutputWriteError):
            raise
        except Exception as exc:  # noqa: BLE001  (any reader failure of one case)
            if isinstance(exc, (ValueError, OSError)):
                reason, problem = describe_error(exc), "unreadable input"
            else:
                reason = f"{file}: {type(exc).__name__}: {exc}"
                problem = "unexpected reader error"
                log.debug("case %s", case, exc_info=True)
            self.skip(case, file, reason, problem)

    # -- policy ------------------------------------------------------------------------
    def label_or_exclude(self, case, file, pathology):
        label = cases_mod.label_for(pathology, self.bwc)
        if label is None:
            p = (pathology or "").strip().upper() or "(none)"
            why = ("BENIGN_WITHOUT_CALLBACK excluded (--bwc exclude)"
                   if p == "BENIGN_WITHOUT_CALLBACK" else f"pathology {p} has no label")
            if p not in ("UNPROVEN", "BENIGN_WITHOUT_CALLBACK"):
                self.skip(case, file, f"unknown pathology {p!r}", "unknown pathology")
            else:
                self.exclude(case, file, why, p)
        return label

    def wants_lesion(self, case, file, lesion_type):
        lt = (lesion_type or "").upper()
        if lt.startswith("MASS"):
            return True
        if lt.startswith("CALC"):
            if self.include_calc:
                return True
            self.exclude(case, file, "calcification (add --include-calc to keep)",
                         "calcification")
            return False
        self.skip(case, file, f"unknown lesion type {lesion_type!r}", "unknown lesion type")
        return False

    # -- rows --------------------------------------------------------------------------
    def add_case(self, case_record, mask=None, mask_path=None, mask_file_for_report=None):
        """Add one Case (cases.py). `mask_path` is the source's own mask file (read here unless
        `mask`, its content, is given too); with `mask` alone a PNG is written beside
        cases.csv."""
        row = case_record.row()
        case = row["case_id"]
        if case in self._ids:
            self.skip(case, row.get("image"), "duplicate case id", "duplicate case id")
            return False
        shape = (int(row["rows"]), int(row["cols"]))
        if mask is None:
            try:
                mask = images.read_mask(mask_path, shape)
            except (images.ImageError, OSError) as exc:
                self.skip(case, mask_path, describe_error(exc), "unreadable mask")
                return False
        if mask.shape != shape:
            self.skip(case, mask_file_for_report or mask_path,
                      f"mask shape {mask.shape} differs from image shape {shape}", "mask size")
            return False
        box = cases_mod.bbox_of(mask)
        if box is None:
            self.skip(case, mask_file_for_report or mask_path or row.get("image"), "empty mask", "empty mask")
            return False
        if mask_path is None:
            name = _safe_name(case) + ".png"
            try:
                images.write_png(os.path.join(self.mask_write_dir, name), mask)
            except OSError as exc:
                raise OutputWriteError(exc.errno, exc.strerror,
                                       exc.filename or self.mask_dir) from exc
            self.masks_written += 1
            mask_path = os.path.join(self.mask_dir, name)
        row = dict(row, mask=os.path.abspath(mask_path), bbox=box)
        self._ids.add(case)
        self.rows.append(row)
        return True

    def counts(self):
        by_status = collections.Counter(e["status"] for e in self.report)
        by_problem = collections.Counter(f"{e['status']}: {e['problem']}" for e in self.report)
        return {
            "ingested": len(self.rows),
            "malignant": sum(1 for r in self.rows if r["label"] == 1),
            "benign": sum(1 for r in self.rows if r["label"] == 0),
            "patients": len({r["patient_id"] for r in self.rows}),
            "skipped": by_status.get("skipped", 0),
            "excluded": by_status.get("excluded", 0),
            "fixed": by_status.get("fixed", 0),
            "by_problem": dict(sorted(by_problem.items())),
        }


def describe_error(exc):
    """An OSError or ValueError as one line naming its file."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    return str(exc)


def _safe_name(text):
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def _collector(kind):
    if kind == "ddsm":
        from deepmammo.sources.ddsm_ingest import collect
    elif kind == "cbis":
        from deepmammo.sources.cbis import collect
    elif kind == "tiff":
        from deepmammo.sources.tiff import collect
    elif kind == "manifest":
        from deepmammo.sources.manifest import collect
    else:
        raise ValueError(f"unknown source kind {kind!r}; choose from {', '.join(KINDS)}")
    return collect


def ingest(kind, path, out_csv, strict=False, bwc="benign", include_calc=False,
           decode_check=False):
    """Ingest the archive at `path` (kind: ddsm, cbis, tiff, manifest) into `out_csv`.

    Writes out_csv, its `.skipped.csv` and `.report.json` (and `<stem>_masks/` when masks
    had to be drawn) and returns the report dict (counts, timing, file names)."""
    from deepmammo.provenance import provenance
    collect = _collector(kind)
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: archive not found")
    ctx = IngestContext(out_csv, strict=strict, bwc=bwc, include_calc=include_calc,
                        decode_check=decode_check)
    check_output_file(ctx.out_csv)
    check_output_folder(ctx.mask_dir)
    had_masks = os.path.isdir(ctx.mask_dir)
    start = time.perf_counter()
    # Nothing is left behind on an error: the masks folder appears (or is replaced) only
    # after every case is collected and cases.csv is written.
    with atomic_path(ctx.mask_dir, is_dir=True) as mask_tmp:
        ctx.mask_write_dir = mask_tmp
        collect(path, ctx)
        elapsed = time.perf_counter() - start
        ctx.rows.sort(key=lambda r: r["case_id"])
        cases_mod.write_cases(ctx.rows, ctx.out_csv)
    if not ctx.masks_written and not had_masks:
        os.rmdir(ctx.mask_dir)   # this source brings its own masks: no empty folder
    skipped_csv, report_json = cases_mod.report_paths(ctx.out_csv)
    cases_mod.write_report_csv(ctx.report, skipped_csv)
    report = {
        "cases_csv": ctx.out_csv,
        "skipped_csv": skipped_csv,
        "source": kind,
        "archive": os.path.abspath(path),
        "counts": ctx.counts(),
        "seconds": round(elapsed, 3),
        "cases_per_second": round(len(ctx.rows) / elapsed, 2) if elapsed > 0 else None,
        "options": {"strict": strict, "bwc": bwc, "include_calc": include_calc,
                    "decode_check": decode_check},
        "provenance": provenance(config={"kind": kind, "path": os.path.abspath(path)}),
    }
    write_text(report_json, json.dumps(report, indent=1) + "\n")
    return report


def summary_text(report):
    c = report["counts"]
    lines = [f"{c['ingested']} cases ({c['malignant']} malignant, {c['benign']} benign) from "
             f"{c['patients']} patients -> {report['cases_csv']}",
             f"skipped {c['skipped']}, excluded {c['excluded']}, fixed {c['fixed']} "
             f"(see {report['skipped_csv']}); {report['seconds']} s, "
             f"{report['cases_per_second']} cases/s"]
    for problem, n in c["by_problem"].items():
        lines.append(f"  {n:6d}  {problem}")
    return "\n".join(lines)
