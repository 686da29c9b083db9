"""Find each experiment's latest run and its evaluation results under a runs folder.

Layout (the experiment runner's): runs/<experiment>/<timestamp>/ with config.yaml,
solver.prototxt, train.log / train_log.csv, snapshots, provenance.json, and the results.json
files `deepmammo eval` wrote anywhere inside the run folder (format "deepmammo-eval/1"; their
`split` says validation or test; those marked `external` are another dataset's, kept apart).

Repeats: when the newest run of an experiment carries a `repeat_group`, every run of that group
(one per seed) is gathered into `Run.repeats`; the newest stays the experiment's Run for what
shows one run (saliency, filters, ROC).
"""
import json
import logging
import os

from deepmammo.evaluate.records import FORMAT, Results
from deepmammo.evaluate.runinfo import run_info
from deepmammo.evaluate.select import DEFAULT_CRITERIA

log = logging.getLogger(__name__)


class Run:
    """One training run with its validation and test results (Results records; either may be
    missing)."""

    def __init__(self, experiment, run_dir, val=None, test=None):
        self.experiment = experiment
        self.shown_as = None  # the run's own experiment name when an alias renamed it
        self.run_dir = run_dir
        self.val = val
        self.test = test
        self.info = run_info(run_dir)
        self.repeats = [self]  # every run of its repeat group, by (data seed, seed)
        self.external = []  # results of the run's snapshots on other archives' datasets

    @property
    def from_scratch(self):
        return bool(self.info.get("from_scratch"))

    @property
    def criteria(self):
        """The validation metrics `deepmammo eval --select-by` chose the snapshot with."""
        return self.val.criteria if self.val else DEFAULT_CRITERIA

    def chosen_val(self):
        """The validation entry chosen on validation, or None without validation results."""
        return self.val.chosen() if self.val else None

    def chosen_test(self):
        """The test entry of the snapshot chosen on validation (None if either is missing)."""
        return self.test.chosen(self.val) if self.val and self.test else None

    def scored(self):
        """(split, results, entry) of the chosen snapshot on test, else on validation; None
        without results."""
        if self.chosen_test() is not None:
            return "test", self.test, self.chosen_test()
        if self.chosen_val() is not None:
            return "val", self.val, self.chosen_val()
        return None

    def __repr__(self):
        return "Run(%s, %s)" % (self.experiment, self.run_dir)


def results_files(run_dir, external=None):
    """Eval results.json files inside a run folder, by split (the newest file per split).
    Results on another dataset (`external` in the file) are left out; with `external` (a list)
    their paths are appended to it instead."""
    found = {}
    for root, dirs, files in os.walk(run_dir):
        dirs[:] = [d for d in dirs if not d.endswith("_predictions")]
        for name in files:
            if not name.endswith(".json") or name in ("provenance.json",):
                continue
            path = os.path.join(root, name)
            try:
                with open(path) as f:
                    head = json.load(f)
            except (OSError, ValueError):
                continue
            if isinstance(head, dict) and head.get("format") == FORMAT:
                if head.get("external"):
                    if external is not None:
                        external.append(path)
                    continue
                split = head.get("split")
                if split not in found or os.path.getmtime(path) > os.path.getmtime(found[split]):
                    found[split] = path
    return found


def load_run(run_dir, experiment=None):
    external = []
    files = results_files(run_dir, external)
    val = Results.load(files["val"]) if "val" in files else None
    test = Results.load(files["test"]) if "test" in files else None
    experiment = experiment or run_info(run_dir)["experiment"]
    run = Run(experiment, run_dir, val, test)
    run.external = [Results.load(p) for p in sorted(external)]
    return run


def _seed_order(run):
    info = run.info
    return (info.get("data_seed") is not None, info.get("data_seed") or 0,
            info.get("seed") is None, info.get("seed") or 0, run.run_dir)


def gather_repeats(run, exp_dir):
    """Fill run.repeats with every evaluated run folder in exp_dir of run's repeat group."""
    group = run.info.get("repeat_group")
    if not group:
        return run
    members = [run]
    for stamp in sorted(os.listdir(exp_dir)):
        other = os.path.join(exp_dir, stamp)
        if os.path.islink(other) or not os.path.isdir(other) or \
                os.path.realpath(other) == os.path.realpath(run.run_dir):
            continue
        if run_info(other).get("repeat_group") == group and results_files(other):
            members.append(load_run(other, run.experiment))
    run.repeats = sorted(members, key=_seed_order)
    return run


def ordered(runs, preferred=()):
    """Runs in the paper's order (then by name), the `preferred` experiments first."""
    from deepmammo.report import paper
    names = [e for e in preferred if e in runs]
    names += [e for e in paper.experiment_order() if e in runs and e not in names]
    names += sorted(e for e in runs if e not in names)
    return [runs[e] for e in names]


def collect_runs(runs_root, overrides=None, aliases=None):
    """{experiment: Run} for the newest run folder of each experiment that has results.

    overrides: {experiment: run folder} to report a particular run instead of the newest.
    aliases: {run experiment: table experiment}, e.g. {"demo-levynet": "levynet"}, so a run
    under another name fills a paper row (the run keeps its folder and provenance).
    """
    runs = {}
    overrides = dict(overrides or {})
    if runs_root and os.path.isdir(runs_root):
        for experiment in sorted(os.listdir(runs_root)):
            exp_dir = os.path.join(runs_root, experiment)
            if not os.path.isdir(exp_dir) or experiment in overrides:
                continue
            # Timestamps sort by name; take the newest run that has any results. Links (the
            # runner's `latest`) are skipped: the folder they name is in the listing itself.
            for stamp in sorted(os.listdir(exp_dir), reverse=True):
                run_dir = os.path.join(exp_dir, stamp)
                if os.path.islink(run_dir):
                    continue
                if os.path.isdir(run_dir) and results_files(run_dir):
                    runs[experiment] = gather_repeats(load_run(run_dir, experiment), exp_dir)
                    break
    elif runs_root:
        raise FileNotFoundError("runs folder not found: %s" % runs_root)
    for experiment, run_dir in overrides.items():
        if not os.path.isdir(run_dir):
            raise FileNotFoundError("run folder for %s not found: %s" % (experiment, run_dir))
        runs[experiment] = load_run(run_dir, experiment)
    for source, target in (aliases or {}).items():
        if source not in runs:
            raise ValueError("no evaluated run of %s under %s to show as %s"
                             % (source, runs_root, target))
        run = runs.pop(source)
        for member in run.repeats:
            member.experiment, member.shown_as = target, source
        runs[target] = run
    if not runs:
        log.warning("no evaluated runs under %s", runs_root)
    return runs
