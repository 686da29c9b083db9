"""Where a dataset's masses came from, read from the records each stage left: the dataset's
build.json names its crops and their cases table, the cases table's report names the archive
it was ingested from, and `deepmammo synth` leaves synth_truth.json at the root of every
archive it writes. Tables, reports and model cards say so when the data were synthetic."""
import json
import os

SYNTH_MARK = "synth_truth.json"


def _json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def dataset_origin(dataset):
    """{cases, archive, source, synthetic (True/False/None: unknown), ingest counts} of a
    dataset folder (one holding build.json)."""
    build = _json(os.path.join(dataset, "build.json")) or {}
    config = build.get("config") or {}
    cases = (config.get("crops_config") or {}).get("cases")
    origin = {"dataset": os.path.abspath(dataset), "cases": cases, "archive": None,
              "source": None, "synthetic": None, "ingest_counts": None}
    if not cases:
        return origin
    from deepmammo.sources.cases import report_paths
    report = _json(report_paths(cases)[1]) or {}
    archive = report.get("archive")
    origin.update(archive=archive, source=report.get("source"),
                  ingest_counts=report.get("counts"))
    if archive and os.path.exists(archive):
        root = archive if os.path.isdir(archive) else os.path.dirname(archive)
        origin["synthetic"] = os.path.isfile(os.path.join(root, SYNTH_MARK))
    return origin


def run_origin(run_dir):
    """dataset_origin of the dataset a run folder trained on (None when it cannot be told)."""
    from deepmammo.evaluate.runinfo import resolve_recorded, run_info
    if not run_dir or not os.path.isdir(run_dir):
        return None
    dataset = (run_info(run_dir).get("config") or {}).get("dataset")
    folder = resolve_recorded(dataset, os.path.realpath(run_dir)) \
        if isinstance(dataset, str) else None
    return dataset_origin(folder) if folder else None


def synthetic_note(origins):
    """A title suffix for outputs built from these datasets' origins: '' for real archives."""
    if any(o and o.get("synthetic") for o in origins):
        return " (SYNTHETIC DATA: `deepmammo synth`, not a mammography archive)"
    return ""
