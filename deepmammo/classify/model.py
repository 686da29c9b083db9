"""A trained run as a classifier: everything `classify` and `export` need, read from the run's
own records (the files the experiment runner and `eval` wrote):

    deploy.prototxt, train_val.prototxt   the net; the TEST Data layer's mean, crop and scale
    *_iter_N.caffemodel                   the snapshots
    eval/val.json                         the snapshot chosen on validation and the decision
                                          threshold fitted on validation for each snapshot
    config.yaml -> dataset/build.json     the input recipe (padding, grey mapping, record size,
                                          val/test resize) of the run's dataset
"""
import json
import os

from deepmammo.evaluate import runinfo
from deepmammo.evaluate.records import Results
from deepmammo.evaluate.runinfo import resolve_recorded
from deepmammo.prep.recipe import Recipe


class RunError(ValueError):
    """A run folder that cannot classify; the message names the file."""


def _load_json(path):
    with open(path) as f:
        try:
            return json.load(f)
        except ValueError as exc:
            raise RunError(f"{path}: not JSON ({exc})") from None


class TrainedRun:
    """A run folder (runs/<experiment>/<timestamp>, or its `latest` link) ready to classify.

    snapshot: None (the one validation chose; the last one when the run was not evaluated),
    a path, a file name in the run folder, or an iteration number."""

    def __init__(self, run, snapshot=None):
        run = os.fspath(run)
        if os.path.isfile(run) and run.endswith(".caffemodel") and snapshot is None:
            snapshot, run = run, os.path.dirname(run)   # a snapshot names its run
        if not os.path.isdir(run):
            raise FileNotFoundError(f"{run}: run folder not found")
        self.run_dir = os.path.realpath(run)
        self.info = runinfo.run_info(self.run_dir)
        self.config = self.info.get("config") or {}
        self.deploy = self._file("deploy.prototxt", "the deploy net")
        self.train_val = self._file("train_val.prototxt", "the TEST Data layer's transform")
        self.snapshots = self._snapshots()
        self.val_path = os.path.join(self.run_dir, "eval", "val.json")
        self.val = Results(_load_json(self.val_path), self.val_path) \
            if os.path.isfile(self.val_path) else None
        self.snapshot, self.chosen_by = self._choose(snapshot)
        self.threshold = self._threshold()
        self.dataset = self._dataset()
        self.recipe = Recipe.from_build(os.path.join(self.dataset, "build.json"),
                                        padding=self.config.get("padding"))
        self.crop_size, self.mean_path, self.mean_value, self.scale = self._transform()

    # ---------------------------------------------------------------- files of the run
    def _file(self, name, what):
        path = os.path.join(self.run_dir, name)
        if not os.path.isfile(path):
            raise RunError(f"{path}: not found ({what}); is {self.run_dir} a run folder "
                           "(runs/<experiment>/<timestamp>)?")
        return path

    def _snapshots(self):
        found = [os.path.join(self.run_dir, n) for n in os.listdir(self.run_dir)
                 if n.endswith(".caffemodel") and runinfo.snapshot_iteration(n) is not None]
        if not found:
            raise RunError(f"{self.run_dir}: the run has no snapshots (*_iter_N.caffemodel): "
                           "train it first (make <experiment>, or deepmammo experiment)")
        return sorted(found, key=lambda p: (runinfo.snapshot_iteration(p), p))

    def _choose(self, wanted):
        if wanted is None:
            selected = self.val.selected if self.val else {}
            name = selected.get("snapshot")
            if name:
                for path in self.snapshots:
                    if os.path.basename(path) == name:
                        return path, "chosen on validation by " + \
                            ", ".join(selected.get("criteria") or ())
                raise RunError(f"{self.val_path}: validation chose {name}, which is not in "
                               f"{self.run_dir}")
            return self.snapshots[-1], "the last snapshot (the run has no validation " \
                                       "results: eval/val.json)"
        wanted = os.fspath(wanted)
        if wanted.isdigit():
            for path in self.snapshots:
                if runinfo.snapshot_iteration(path) == int(wanted):
                    return path, "named (--snapshot)"
            raise RunError(f"{self.run_dir}: no snapshot of iteration {wanted} (have "
                           f"{', '.join(os.path.basename(p) for p in self.snapshots)})")
        for path in (wanted, os.path.join(self.run_dir, wanted)):
            if os.path.isfile(path):
                return os.path.realpath(path), "named (--snapshot)"
        raise FileNotFoundError(f"{wanted}: snapshot not found (have "
                                f"{', '.join(os.path.basename(p) for p in self.snapshots)})")

    def _threshold(self):
        """The decision threshold validation fitted for this snapshot; None: argmax."""
        entry = self.val.entry(os.path.basename(self.snapshot)) if self.val else None
        fitted = (entry.fitted_threshold if entry else None) or {}
        if fitted.get("value") is not None:
            return {"value": float(fitted["value"]), "criterion": fitted.get("criterion", ""),
                    "source": self.val_path}
        return None

    def _dataset(self):
        recorded = self.config.get("dataset")
        folder = resolve_recorded(recorded, self.run_dir) if isinstance(recorded, str) \
            else None
        if folder is None or not os.path.isdir(folder):
            raise RunError(f"{os.path.join(self.run_dir, 'config.yaml')}: the run's dataset "
                           f"{recorded!r} is not here; its build.json holds the input recipe "
                           "(padding, grey mapping, record size)")
        return folder

    def _transform(self):
        from deepmammo.evaluate.predict import test_transform
        t = test_transform(self.train_val)
        mean_path = None
        if t["mean_file"]:
            mean_path = resolve_recorded(t["mean_file"], self.run_dir)
            if mean_path is None:
                raise FileNotFoundError(f"{t['mean_file']}: the training mean named by "
                                        f"{self.train_val} is not found")
        return t["crop_size"], mean_path, t["mean_value"], t["scale"]

    # ---------------------------------------------------------------- what it says
    def mean(self):
        """The mean the TEST phase subtracts: an image of the record's size, per-channel
        values, or None."""
        import numpy as np
        if self.mean_path:
            from deepmammo.caffe.formats.binaryproto import read_mean
            return read_mean(self.mean_path)
        if self.mean_value:
            return np.asarray(self.mean_value, dtype=np.float32)
        return None

    def check_grey(self, spec):
        """Refuse a grey mapping other than the one the run's dataset used."""
        if spec is None:
            return
        from deepmammo.prep.greylevel import GreyMapping
        asked = GreyMapping.parse(spec)
        if str(asked) != str(self.recipe.grey):
            raise RunError(f"{self.recipe.source}: the run trained on grey mapping "
                           f"{self.recipe.grey}, not {asked}: its records would not mean what "
                           f"the net learnt (leave --grey out, or use {self.recipe.grey})")

    def decision(self, p_malignant):
        """1 (malignant) or 0 at the validation threshold (p >= t), else at argmax."""
        if self.threshold is not None:
            return int(p_malignant >= self.threshold["value"])
        return int(p_malignant > 0.5)

    def describe(self):
        t = self.threshold
        rule = (f"threshold {t['value']:.4g} ({t['criterion']}, fitted on validation)"
                if t else "argmax (no validation threshold for this snapshot)")
        return f"snapshot {self.snapshot} ({self.chosen_by}); decision at {rule}"

    def summary(self):
        """The facts a result file records about the model."""
        return {"run": self.run_dir, "experiment": self.info.get("experiment"),
                "snapshot": self.snapshot, "snapshot_choice": self.chosen_by,
                "threshold": self.threshold, "deploy": self.deploy,
                "dataset": self.dataset, "recipe": self.recipe.to_dict(),
                "mean": self.mean_path or self.mean_value, "crop_size": self.crop_size,
                "scale": self.scale}
