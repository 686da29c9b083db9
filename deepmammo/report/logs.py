"""Training logs as data: the CSV the solver writes beside its log, or Caffe's glog text parsed
the way Caffe's tools/extra/parse_log.py reads it, so logs of real Caffe runs work too.

Both give two lists of dicts: train rows (iteration, lr, train_<output>...) and test rows
(iteration, test<k>_<output>...).
"""
import csv
import os
import re

# glog prefix: I<MMDD> or I<YYYYMMDD>, time, thread, file:line]
_PREFIX = r"^[IWEF]\d{4,8}\s+[\d:.]+\s+\S+\s+\S+\]\s*"
_TRAIN_ITER = re.compile(_PREFIX + r"Iteration (\d+)(?: \(.*?\))?, loss = ([-+\d.eE]+|nan|inf)")
_TEST_ITER = re.compile(_PREFIX + r"Iteration (\d+), Testing net \(#(\d+)\)")
_LR = re.compile(_PREFIX + r"Iteration (\d+), lr = ([-+\d.eE]+)")
_OUTPUT = re.compile(_PREFIX + r"\s*(Train|Test) net output #\d+: (\S+) = ([-+\d.eE]+|nan|inf)")


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
    train, test = {}, {}
    current_test = None  # (iteration, net index) of the test being reported
    last_train_iter = None
    with open(path, errors="replace") as f:
        for line in f:
            m = _TEST_ITER.search(line)
            if m:
                current_test = (int(m.group(1)), int(m.group(2)))
                continue
            m = _TRAIN_ITER.search(line)
            if m:
                last_train_iter = int(m.group(1))
                row = train.setdefault(last_train_iter, {"iteration": last_train_iter})
                row["train_smoothed_loss"] = _number(m.group(2))
                current_test = None
                continue
            m = _LR.search(line)
            if m:
                it = int(m.group(1))
                train.setdefault(it, {"iteration": it})["lr"] = _number(m.group(2))
                continue
            m = _OUTPUT.search(line)
            if m:
                kind, name, value = m.group(1), m.group(2), _number(m.group(3))
                if kind == "Test" and current_test is not None:
                    it, k = current_test
                    test.setdefault(it, {"iteration": it})["test%d_%s" % (k, name)] = value
                elif kind == "Train" and last_train_iter is not None:
                    train[last_train_iter]["train_%s" % name] = value
    return ([train[k] for k in sorted(train)], [test[k] for k in sorted(test)])


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
