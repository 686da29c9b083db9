"""Training with real BVLC Caffe: its own `caffe train` tool in a child process.

The parent reads the child's output line by line as it comes, so it never blocks whatever the
log's size (pycaffe's `solve()` holds the GIL: a Python thread cannot drain its glog output);
it echoes each line to stderr (glog's own format, so `2>&1 | tee` gives a log Caffe's tools
read), appends it to the run's log file, shows progress, and writes train_log.csv from the
lines at the end, as our engine does. Ctrl-C is passed on to Caffe, which stops after the
current iteration (and snapshots, as its tool does).
"""
import contextlib
import os
import signal
import subprocess
import sys

from tqdm import tqdm

from deepmammo.atomic import write_csv
from deepmammo.caffe.parse_log import ITERATION, solver_rows
from deepmammo.caffe.train_log import csv_path_for


class CaffeTrainError(RuntimeError):
    """Real Caffe's training stopped with an error (its last error lines are in the message)."""


def caffe_command(solver_path, snapshot=None):
    from deepmammo.caffe.real import caffe_tool
    cmd = [caffe_tool(), "train", f"--solver={solver_path}"]
    if snapshot:
        cmd.append(f"--snapshot={snapshot}")
    return cmd


def _environment():
    env = dict(os.environ)
    # The log is the run's record (and what the CSV is parsed from): every INFO line, on the
    # stream the parent reads, whatever a quieter setting in the caller's environment says.
    env["GLOG_logtostderr"] = "1"
    env["GLOG_minloglevel"] = "0"
    return env


def run_caffe_train(solver_path, log_path, max_iter=None, snapshot=None, echo=True):
    """Run `caffe train` on `solver_path`; the log goes to `log_path` (appended) and stderr,
    train_log.csv beside the log. Returns the child's exit status (0), else raises."""
    cmd = caffe_command(solver_path, snapshot)
    os.makedirs(os.path.dirname(os.path.abspath(log_path)) or ".", exist_ok=True)
    lines, errors = [], []
    show_bar = echo and sys.stderr.isatty()
    bar = tqdm(total=max_iter, desc="caffe train", unit="it", disable=not show_bar,
               leave=False, file=sys.stderr)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, env=_environment())
    interrupted = False
    try:
        with open(log_path, "a", encoding="utf-8") as log_file:
            while True:
                try:
                    raw = proc.stdout.readline()
                except KeyboardInterrupt:
                    # Caffe's tool treats SIGINT as "stop" (snapshotting first): let it finish
                    interrupted = True
                    with contextlib.suppress(ProcessLookupError):
                        proc.send_signal(signal.SIGINT)
                    continue
                if not raw:
                    break
                line = raw.decode("utf-8", errors="replace").rstrip("\n")
                log_file.write(line + "\n")
                log_file.flush()
                lines.append(line)
                if line.startswith(("E", "F")) or "Check failed" in line:
                    errors.append(line)
                if echo:
                    if show_bar:
                        bar.write(line, file=sys.stderr)
                    else:
                        sys.stderr.write(line + "\n")
                        sys.stderr.flush()
                m = ITERATION.search(line)
                if m and show_bar:
                    bar.n = int(m.group(1))
                    bar.refresh()
        rc = proc.wait()
    finally:
        if proc.poll() is None:  # an error of ours: never leave Caffe running behind us
            proc.kill()
            proc.wait()
        bar.close()
        _write_solver_csv(csv_path_for(log_path), lines)
    if interrupted:
        raise KeyboardInterrupt
    if rc != 0:
        last = errors[-3:] or lines[-3:]
        raise CaffeTrainError(f"real Caffe's `caffe train --solver={solver_path}` failed "
                              f"(exit status {rc}): " + " | ".join(last))
    return rc


def _write_solver_csv(path, lines):
    """train_log.csv with our solver's columns (iteration, lr, loss, train_<output>,
    test<k>_<output>), from the lines Caffe printed."""
    train, test = solver_rows(lines)
    rows = {}
    for row in train + test:
        merged = rows.setdefault(row["iteration"], {})
        merged.update(row)
        if "train_smoothed_loss" in merged:
            merged["loss"] = merged.pop("train_smoothed_loss")
    columns = ["iteration", "lr", "loss"]
    for row in rows.values():
        columns += [c for c in row if c not in columns]
    write_csv(path, columns, [rows[k] for k in sorted(rows)])
