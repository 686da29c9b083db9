"""Caffe's training log (glog lines) as data: the counterpart of Caffe's
tools/extra/parse_log.py, for logs of either engine.

    deepmammo parse-log train.log [OUT_DIR]   ->  OUT_DIR/train.log.train, train.log.test

Both CSVs have parse_log.py's columns: NumIters, Seconds (since the `Solving` line),
LearningRate, then one column per net output (`Train net output #k: NAME = value`). glog
prefixes are read with either date form: `I1130 ...` (glog before 0.7) and `I20261130 ...`.
A line that is not glog (a progress bar, a Python warning) is skipped.
"""
import collections
import csv
import datetime
import os
import re

from deepmammo.atomic import write_text

# severity, date (MMDD or YYYYMMDD), time, thread, file:line]
GLOG_PREFIX = re.compile(r"^([IWEF])(\d{4}|\d{8})\s+(\d{2}):(\d{2}):(\d{2})\.(\d{6})\s+\S+\s+"
                         r"\S+\]\s?")
ITERATION = re.compile(r"Iteration (\d+)")
TRAIN_OUTPUT = re.compile(r"Train net output #(\d+): (\S+) = ([-+.\deE]+|nan|-?inf)")
TEST_OUTPUT = re.compile(r"Test net output #(\d+): (\S+) = ([-+.\deE]+|nan|-?inf)")
LEARNING_RATE = re.compile(r"lr = ([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)")


class LogError(ValueError):
    """A log that holds no glog lines."""


def line_time(line, year):
    """The datetime of a glog line (None for a line that is not glog)."""
    m = GLOG_PREFIX.match(line)
    if not m:
        return None
    date = m.group(2)
    if len(date) == 8:
        year, month, day = int(date[:4]), int(date[4:6]), int(date[6:])
    else:
        month, day = int(date[:2]), int(date[2:])
    try:
        return datetime.datetime(year, month, day, int(m.group(3)), int(m.group(4)),
                                 int(m.group(5)), int(m.group(6)))
    except ValueError:
        return None


def _message(line):
    m = GLOG_PREFIX.match(line)
    return line[m.end():] if m else None


class LogParser:
    """Feed glog lines one at a time (`feed`), read parse_log.py's train and test rows.

    Rows start when a net output of a new iteration appears and are complete when they have as
    many columns as the first row, as in parse_log.py; the first rows' missing learning rate
    is taken from the second row.
    """

    def __init__(self, year=None):
        self.year = year or datetime.datetime.now().year
        self.iteration = -1
        self.learning_rate = float("nan")
        self.start = None
        self.train, self.test = [], []
        self._rows = {"train": None, "test": None}
        self.glog_lines = 0

    def feed(self, line):
        when = line_time(line, self.year)
        if when is None:
            return
        self.glog_lines += 1
        message = _message(line)
        if self.start is None or "Solving" in message and self.iteration == -1:
            self.start = when
        m = ITERATION.search(message)
        if m:
            self.iteration = int(m.group(1))
        if self.iteration == -1:
            return
        seconds = (when - self.start).total_seconds()
        m = LEARNING_RATE.search(message)
        if m:
            self.learning_rate = float(m.group(1))
        self._output(TRAIN_OUTPUT, "train", self.train, message, seconds)
        self._output(TEST_OUTPUT, "test", self.test, message, seconds)

    def _output(self, regex, kind, rows, message, seconds):
        row = self._rows[kind]
        m = regex.search(message)
        if m:
            if row is None or row["NumIters"] != self.iteration:
                if row is not None:
                    rows.append(row)
                row = collections.OrderedDict(
                    [("NumIters", self.iteration), ("Seconds", seconds),
                     ("LearningRate", self.learning_rate)])
            row[m.group(2)] = float(m.group(3))
        if row is not None and rows and len(row) == len(rows[0]):
            rows.append(row)
            row = None
        self._rows[kind] = row

    def finish(self):
        """(train rows, test rows), with a trailing incomplete row kept."""
        for kind, rows in (("train", self.train), ("test", self.test)):
            if self._rows[kind] is not None:
                rows.append(self._rows[kind])
                self._rows[kind] = None
            if len(rows) > 1 and rows[0]["LearningRate"] != rows[0]["LearningRate"]:
                rows[0]["LearningRate"] = rows[1]["LearningRate"]
        return self.train, self.test


def parse_log(path):
    """(train rows, test rows) of a glog training log, as parse_log.py's parse_log."""
    year = datetime.datetime.fromtimestamp(os.path.getmtime(path)).year
    parser = LogParser(year)
    with open(path, "r", encoding="utf-8", errors="replace") as f:
        for line in f:
            parser.feed(line.rstrip("\n"))
    if parser.glog_lines == 0:
        raise LogError(f"{path}: no glog lines (a Caffe training log has lines like "
                       "'I1130 12:00:00.000000  1234 solver.cpp:218] Iteration 0, loss = 0.7')")
    return parser.finish()


def _csv_text(rows):
    if not rows:
        return ""
    columns = list(rows[0])
    for row in rows[1:]:
        columns += [c for c in row if c not in columns]
    lines = [",".join(columns)]
    for row in rows:
        lines.append(",".join(_cell(row.get(c)) for c in columns))
    return "\n".join(lines) + "\n"


def _cell(value):
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return repr(value)
    return str(value)


def save_csv_files(log_path, out_dir, train, test):
    """OUT_DIR/<log name>.train and .test, as parse_log.py names them."""
    os.makedirs(out_dir, exist_ok=True)
    base = os.path.join(out_dir, os.path.basename(log_path))
    write_text(base + ".train", _csv_text(train))
    write_text(base + ".test", _csv_text(test))
    return base + ".train", base + ".test"


def read_csv(path):
    """Rows of a .train/.test CSV, numbers as floats (what tests and plots compare)."""
    with open(path, newline="", encoding="utf-8") as f:
        return [{k: float(v) if v != "" else None for k, v in row.items()}
                for row in csv.DictReader(f)]


# ------------------------------------------------------------ our solver's CSV columns
_TRAIN_ITER = re.compile(r"Iteration (\d+)(?: \(.*?\))?, loss = ([-+.\deE]+|nan|-?inf)")
_TEST_ITER = re.compile(r"Iteration (\d+), Testing net \(#(\d+)\)")
_LR = re.compile(r"Iteration (\d+), lr = ([-+.\deE]+)")
_OUTPUT = re.compile(r"^\s*(Train|Test) net output #\d+: (\S+) = ([-+.\deE]+|nan|-?inf)")


def _number(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def solver_rows(lines):
    """(train rows, test rows) with the columns of our solver's train_log.csv, from glog
    lines of either engine: train rows {iteration, train_smoothed_loss, lr, train_<output>},
    test rows {iteration, test<k>_<output>} (k: the test net)."""
    train, test = {}, {}
    current_test = None  # (iteration, net index) of the test being reported
    last_train_iter = None
    for line in lines:
        message = _message(line.rstrip("\n"))
        if message is None:
            continue
        m = _TEST_ITER.search(message)
        if m:
            current_test = (int(m.group(1)), int(m.group(2)))
            continue
        m = _TRAIN_ITER.search(message)
        if m:
            last_train_iter = int(m.group(1))
            row = train.setdefault(last_train_iter, {"iteration": last_train_iter})
            row["train_smoothed_loss"] = _number(m.group(2))
            current_test = None
            continue
        m = _LR.search(message)
        if m:
            it = int(m.group(1))
            train.setdefault(it, {"iteration": it})["lr"] = _number(m.group(2))
            continue
        m = _OUTPUT.search(message)
        if m:
            kind, name, value = m.group(1), m.group(2), _number(m.group(3))
            if kind == "Test" and current_test is not None:
                it, k = current_test
                test.setdefault(it, {"iteration": it})["test%d_%s" % (k, name)] = value
            elif kind == "Train" and last_train_iter is not None:
                train[last_train_iter]["train_%s" % name] = value
    return [train[k] for k in sorted(train)], [test[k] for k in sorted(test)]
