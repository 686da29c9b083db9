"""Training logs as data: the CSV the solver writes beside its log, or Caffe's glog text parsed
the way Caffe's tools/extra/parse_log.py reads it, so logs of real Caffe runs work too.

Both give two lists of dicts: train rows (iteration, lr, train_<output>...) and test rows
(iteration, test<k>_<output>...).
"""
import csv
import os
import re

from deepmammo.caffe.parse_log import solver_rows


def _number(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def read_log_csv(path):
    """(train rows, test rows) from the solver's CSV (iteration, lr, train_*, test<k>_*)."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or "iteration" not in reader.fieldnames:
            raise ValueError("%s: a training log CSV needs an 'iteration' column" % path)
        train, test = {}, {}
        for row in reader:
            it = int(float(row["iteration"]))
            for name, value in row.items():
                v = _number(value)
                if v is None or name == "iteration":
                    continue
                if name.startswith("train_") or name == "lr":
                    train.setdefault(it, {"iteration": it})[name] = v
                elif name == "loss":  # the smoothed loss the solver displays
                    train.setdefault(it, {"iteration": it})["train_smoothed_loss"] = v
                elif re.match(r"test\d+_", name):
                    test.setdefault(it, {"iteration": it})[name] = v
    return ([train[k] for k in sorted(train)], [test[k] for k in sorted(test)])


def parse_caffe_log(path):
    """(train rows, test rows) from a Caffe (or our engine's) glog-format training log."""
    with open(path, errors="replace") as f:
        return solver_rows(f)


def read_training_log(run_dir_or_file):
    """Train and test rows of a run: train_log.csv if present, else the glog text (train.log).

    Accepts a run folder, a CSV or a log file. A missing log is an error naming where we looked.
    """
    path = run_dir_or_file
    if os.path.isdir(path):
        for name in ("train_log.csv", "train.log"):
            candidate = os.path.join(path, name)
            if os.path.isfile(candidate):
                path = candidate
                break
        else:
            raise FileNotFoundError("no train_log.csv or train.log in %s" % run_dir_or_file)
    if not os.path.isfile(path):
        raise FileNotFoundError("training log not found: %s" % path)
    if path.endswith(".csv"):
        return read_log_csv(path)
    return parse_caffe_log(path)


def series(rows, name):
    """(iterations, values) of one column, skipping rows without it."""
    pairs = [(r["iteration"], r[name]) for r in rows if r.get(name) is not None]
    return [p[0] for p in pairs], [p[1] for p in pairs]
