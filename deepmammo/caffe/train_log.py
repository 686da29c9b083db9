"""The training log in Caffe's own (glog) line format, and a CSV of every logged figure beside it.

Lines look like `I1126 01:30:00.123456 12345 solver.py:250] Iteration 100, lr = 0.01`, with the
same messages Caffe's solver prints, so that Caffe's `tools/extra/parse_log.py` and
`plot_training_log.py` read our logs. glog's short `I<MMDD>` date is used because parse_log.py
reads the month and day from exactly those characters.

Both files are appended line by line and flushed, not written under a temporary name: a log is
most needed when training crashed, and a resumed run continues the same files.
"""
import csv
import datetime
import logging
import os
import sys
import threading

import numpy as np

logger = logging.getLogger("deepmammo.caffe.solver")


def fmt(value):
    """A number as C++'s default ostream prints a float (6 significant digits, %g)."""
    value = float(value)
    if value != value:
        return "nan"
    if value in (float("inf"), float("-inf")):
        return "inf" if value > 0 else "-inf"
    return "%g" % float(np.float32(value))


def glog_line(message, source="solver.py:0", when=None, severity="I"):
    """One glog line: `I<MMDD> <HH:MM:SS.micro> <thread id> <file>:<line>] <message>`."""
    when = when or datetime.datetime.now()
    tid = threading.get_native_id()
    return (f"{severity}{when:%m%d} {when:%H:%M:%S}.{when.microsecond:06d} {tid:5d} "
            f"{source}] {message}")


class GlogFormatter(logging.Formatter):
    """Python log records as glog lines, so that everything `deepmammo train` writes to stderr
    reads like `caffe train`'s output (`2>&1 | tee train.log` gives a log Caffe's
    parse_log.py reads). A record may carry `glog_source` ("solver.py:250") for its file:line."""

    SEVERITY = {logging.DEBUG: "I", logging.INFO: "I", logging.WARNING: "W",
                logging.ERROR: "E", logging.CRITICAL: "F"}

    def format(self, record):
        when = datetime.datetime.fromtimestamp(record.created)
        source = getattr(record, "glog_source", None) or f"{record.filename}:{record.lineno}"
        severity = self.SEVERITY.get(record.levelno, "I")
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return "\n".join(glog_line(part, source, when, severity)
                         for part in text.split("\n"))


def setup_logging(verbose=False):
    """Log lines on stderr in glog's format, as Caffe's tools write them (the `deepmammo`
    command and real Caffe's child processes alike)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(GlogFormatter())
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler],
                        force=True)


def csv_path_for(log_path):
    """`train.log` -> `train_log.csv` (the CSV lives beside the log)."""
    root, _ = os.path.splitext(log_path)
    return root + "_log.csv"


class TrainLog:
    """Where a solver's messages go: Python logging always; a glog-format file and a CSV when
    `path` is given (the CSV at `csv_path`, default csv_path_for(path))."""

    def __init__(self, path=None, csv_path=None, echo=True):
        self.path = os.fspath(path) if path else None
        self.csv_path = csv_path or (csv_path_for(self.path) if self.path else None)
        self.echo = echo
        self._file = None
        self._csv_file = None
        self._writer = None
        self.columns = None
        self._pending_iter, self._pending = None, {}
        self.rows = []   # every CSV row written, also kept in memory (tests, summaries)
        if self.path:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")

    # ------------------------------------------------------------------- glog lines
    def info(self, message):
        frame = sys._getframe(1)
        while frame.f_back is not None and frame.f_code.co_name in ("_log", "info"):
            frame = frame.f_back
        source = f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno}"
        if self._file:
            self._file.write(glog_line(message, source) + "\n")
            self._file.flush()
        if self.echo:
            logger.info(message, extra={"glog_source": source})

    # ---------------------------------------------------------------------- the CSV
    def set_columns(self, columns):
        """Fix the CSV columns (iteration, lr, loss, train_<output>, test<k>_<output>)."""
        self.columns = list(columns)
        if not self.csv_path or self._csv_file:
            return
        exists = os.path.isfile(self.csv_path) and os.path.getsize(self.csv_path) > 0
        if exists:
            with open(self.csv_path, newline="", encoding="utf-8") as f:
                header = next(csv.reader(f), None)
            if header != self.columns:
                # Another net's log: keep it, start a new one beside it.
                os.replace(self.csv_path, self.csv_path + ".old")
                exists = False
        self._csv_file = open(self.csv_path, "a", newline="", encoding="utf-8")
        self._writer = csv.DictWriter(self._csv_file, fieldnames=self.columns,
                                      extrasaction="ignore")
        if not exists:
            self._writer.writeheader()
            self._csv_file.flush()

    def record(self, iteration, values):
        """Add figures logged at `iteration`; one CSV row per iteration."""
        if self._pending_iter is not None and iteration != self._pending_iter:
            self.flush()
        self._pending_iter = iteration
        self._pending.update(values)

    def flush(self):
        if self._pending_iter is None:
            return
        row = {"iteration": self._pending_iter, **self._pending}
        self.rows.append(row)
        if self._writer:
            self._writer.writerow(row)
            self._csv_file.flush()
        self._pending_iter, self._pending = None, {}

    def close(self):
        self.flush()
        for f in (self._file, self._csv_file):
            if f:
                f.close()
        self._file = self._csv_file = self._writer = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
