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
from deepmammo.caffe.real_log import failure_summary, signal_name
from deepmammo.caffe.train_log import csv_path_for


class CaffeTrainError(ValueError):
    """Real Caffe's training stopped with an error: the message names the user's solver and
    says what Caffe said (its fatal line, or the Python exception a Python layer raised)."""


def caffe_command(solver_path, snapshot=None):
    from deepmammo.caffe.real import caffe_tool
    cmd = [caffe_tool(), "train", f"--solver={solver_path}"]
    if snapshot:
        cmd.append(f"--snapshot={snapshot}")
    return cmd


def python_path(net_folders=()):
    """The PYTHONPATH Caffe's child gets, so that Python layers import as in pycaffe: the
    current folder and the folders of the net prototxts (where a layer's module usually
    sits), the user's own PYTHONPATH, real pycaffe (`import caffe` in a layer module), and
    this interpreter's site-packages (the tool embeds the system Python, which would not see
    a virtual environment's numpy)."""
    import site

    from deepmammo.caffe.real import find_build
    entries = [os.getcwd()] + [os.path.abspath(f) for f in net_folders]
    entries += [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    entries.append(os.path.join(find_build(), "src", "python"))
    entries += site.getsitepackages()
    if site.ENABLE_USER_SITE and os.path.isdir(site.getusersitepackages()):
        entries.append(site.getusersitepackages())
    unique = []
    for entry in entries:
        if entry not in unique:
            unique.append(entry)
    return os.pathsep.join(unique)


def _environment(net_folders=()):
    env = dict(os.environ)
    # The log is the run's record (and what the CSV is parsed from): every INFO line, on the
    # stream the parent reads, whatever a quieter setting in the caller's environment says.
    env["GLOG_logtostderr"] = "1"
    env["GLOG_minloglevel"] = "0"
    env["PYTHONPATH"] = python_path(net_folders)
    return env


def run_caffe_train(solver_path, log_path, max_iter=None, snapshot=None, echo=True,
                    source=None, net_folders=()):
    """Run `caffe train` on `solver_path`; the log goes to `log_path` (appended) and stderr,
    train_log.csv beside the log. Returns the child's exit status (0), else raises a
    CaffeTrainError naming `source` (the user's solver, when `solver_path` is a temporary
    copy of it) and what Caffe said. `net_folders` go on the child's PYTHONPATH."""
    source = source or solver_path
    cmd = caffe_command(solver_path, snapshot)
    os.makedirs(os.path.dirname(os.path.abspath(log_path)) or ".", exist_ok=True)
    lines = []
    show_bar = echo and sys.stderr.isatty()
    bar = tqdm(total=max_iter, desc="caffe train", unit="it", disable=not show_bar,
               leave=False, file=sys.stderr)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, env=_environment(net_folders))
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
        what = failure_summary(lines, signal_name(rc)).replace(os.fspath(solver_path), os.fspath(source))
        raise CaffeTrainError(f"{source}: real Caffe's `caffe train` stopped: {what}")
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
