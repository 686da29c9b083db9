"""The results of `deepmammo eval` as records: `Results` (one results.json, format
"deepmammo-eval/1") and `SnapshotEntry` (one evaluated snapshot in it).

Each is the file's JSON object itself (a dict, so writing a record back gives the file's text
unchanged) with its fields as attributes; code reads the attributes. `Results.chosen()` is the
one definition of "the snapshot chosen on validation"; tables, figures, claims and the model
card all ask it.
"""
import json
import os

from deepmammo.evaluate.select import DEFAULT_CRITERIA, select_snapshot, snapshot_id

FORMAT = "deepmammo-eval/1"


class SnapshotEntry(dict):
    """One snapshot's scores in a results file: its metrics at argmax with 95% intervals, the
    predictions CSV, the calibration, and (validation) the fitted threshold or (test with
    validation thresholds) the metrics at that threshold."""

    __slots__ = ()

    @property
    def name(self):
        """The snapshot's file name: how validation and test results are matched."""
        return snapshot_id(self)

    @property
    def snapshot(self):
        return self["snapshot"]

    @property
    def iteration(self):
        return self.get("iteration")

    @property
    def fraction(self):
        return self.get("fraction")

    @property
    def epoch(self):
        return self.get("epoch")

    @property
    def metrics(self):
        return self["metrics"]

    @property
    def ci(self):
        """{metric: [low, high]}; empty when the evaluation drew no bootstrap."""
        return self.get("ci") or {}

    @property
    def calibration(self):
        return self.get("calibration")

    @property
    def fitted_threshold(self):
        return self.get("fitted_threshold")

    @property
    def threshold_metrics(self):
        return self.get("threshold_metrics")


class Results(dict):
    """One results.json. `path` is where it was read from or written to (kept under the key
    `_path`, which the file itself never holds)."""

    __slots__ = ()

    def __init__(self, data, path=None):
        super().__init__(data)
        if "snapshots" in self:
            self["snapshots"] = [SnapshotEntry(e) for e in self["snapshots"]]
        if path is not None:
            self["_path"] = os.path.abspath(path)

    @classmethod
    def load(cls, path):
        """Read a results file; refuse anything that is not one."""
        if not os.path.isfile(path):
            raise FileNotFoundError("results file not found: %s" % path)
        with open(path) as f:
            try:
                data = json.load(f)
            except json.JSONDecodeError as exc:
                raise ValueError("%s: not JSON (%s)" % (path, exc)) from exc
        if data.get("format") != FORMAT:
            raise ValueError("%s: not a deepmammo eval results file (format %r)"
                             % (path, data.get("format")))
        return cls(data, path)

    def to_json(self):
        """The file's text."""
        return json.dumps({k: v for k, v in self.items() if k != "_path"},
                          indent=1, sort_keys=False) + "\n"

    # ------------------------------------------------------------------ fields
    @property
    def snapshots(self):
        """The evaluated snapshots (SnapshotEntry), by iteration."""
        return self.get("snapshots") or []

    @property
    def path(self):
        return self.get("_path")

    @property
    def split(self):
        return self.get("split")

    @property
    def model(self):
        return self["model"]

    @property
    def lmdb(self):
        return self["lmdb"]

    @property
    def mean(self):
        """A mean file's path, per-channel values, or None."""
        return self.get("mean")

    @property
    def scale(self):
        return self.get("scale", 1.0)

    @property
    def manifest(self):
        return self.get("manifest")

    @property
    def engine(self):
        return self.get("engine")

    @property
    def precision(self):
        return self.get("precision")

    @property
    def tta(self):
        return self.get("tta")

    @property
    def external(self):
        """The external-dataset record (evaluate/external.py), or None for the run's own."""
        return self.get("external")

    @property
    def run_dir(self):
        return (self.get("run") or {}).get("run_dir")

    @property
    def provenance(self):
        return self.get("provenance") or {}

    @property
    def selected(self):
        """The snapshot this file marks as chosen on validation ({} when none)."""
        return self.get("selected") or {}

    @property
    def criteria(self):
        """The validation metrics that choose the snapshot, in order."""
        return tuple(self.selected.get("criteria") or DEFAULT_CRITERIA)

    # ------------------------------------------------------------------ snapshots
    def entry(self, name):
        """The entry of the snapshot file `name`, or None."""
        return next((e for e in self.snapshots if e.name == name), None)

    def chosen(self, val=None):
        """The entry of the snapshot chosen on validation.

        With `val` (the run's validation Results): the snapshot `val` chooses, which this
        file's own mark, when it has one, must name too. Without: the snapshot this file marks
        (`eval` marks the choice of the validation results it was given, and in a validation
        file its own), or in a validation file without a mark the best by its criteria.
        ValueError when the choice cannot be told or the file has no entry for it."""
        reported = self.selected.get("snapshot")
        if val is not None:
            want = val.chosen().name
            entry = self.entry(want)
            if entry is None:
                raise ValueError("snapshot %s chosen on validation has no test result" % want)
            if reported and reported != want:
                raise ValueError(f"{self.path}: reports {reported}, but its validation results "
                                 f"choose {want} by {', '.join(val.criteria)}; evaluate test "
                                 "again with --val-results")
            return entry
        if not reported:
            if self.split == "val":
                return select_snapshot(self.snapshots, self.criteria)
            raise ValueError("%s marks no snapshot chosen on validation (evaluate the test set "
                             "with --val-results, or compare predictions CSVs)" % self.path)
        entry = self.entry(reported)
        if entry is None:
            raise ValueError("%s: the chosen snapshot %s has no entry" % (self.path, reported))
        return entry

    def predictions_path(self, entry):
        """Absolute path of a snapshot's predictions CSV (kept beside the results file)."""
        return os.path.join(os.path.dirname(self.path), entry["predictions"])

    def predictions(self, entry):
        """The prediction rows of a snapshot (evaluate/predict.py's columns)."""
        from deepmammo.evaluate.predict import read_predictions
        return read_predictions(self.predictions_path(entry))


def predictions_path(results, entry):
    """Absolute path of a snapshot's predictions CSV."""
    return results.predictions_path(entry)
