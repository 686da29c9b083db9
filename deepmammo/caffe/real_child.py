"""Real pycaffe in a child process, so that a CHECK failing inside Caffe ends as an error
naming the user's file rather than ending this process.

Caffe stops on a failed CHECK through glog's fatal handler: it prints the message and a C++
stack, then aborts the process, and no Python code runs after it. So whatever runs real
pycaffe (`deepmammo test`, `eval`, the report's saliency and t-SNE figures under engine caffe)
goes through `run(func, ...)`: a fresh interpreter, with this one's sys.path, calls func and
sends back its value (or the exception it raised) through a file.

The child's stdout is this process's. Its stderr comes through here as it is written
(progress bars included), filtered: Caffe logs everything (its setup lines say which layer is
being set up), but its own lines are shown only from GLOG_minloglevel on (default 2: errors,
as pycaffe prints in a process of its own), and nothing from its fatal line on (the stack
dump). When the child dies, `failure_summary` reads what it logged, and the error names the
file the child said it was working on (`using`, `open_net`), else the caller's `source`.

Ctrl-C belongs to this process: the child ignores SIGINT and is killed when this process
stops waiting for it, and by the kernel if this process dies.
"""
import codecs
import collections
import logging
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import traceback

from deepmammo.caffe.real_log import (
    BEFORE_INIT,
    SEVERITIES,
    failure_summary,
    is_caffes,
    parse_glog,
    signal_name,
)

_state_path = None  # in a child: where it writes the name of the user's file in use


class CaffeStopped(ValueError):
    """Real Caffe ended the child process: the message names the user's file and says what
    Caffe said (its fatal line, and the layer being set up)."""


def inside():
    """Whether this process is a child started by run()."""
    return _state_path is not None


def using(path):
    """In a child: `path` is the user's file real Caffe reads or runs now (the one an error
    names if Caffe stops)."""
    if _state_path is not None:
        with open(_state_path, "w", encoding="utf-8") as f:
            f.write(os.fspath(path))


def open_net(caffe, model, weights, phase, shown_as=None, **options):
    """caffe.Net(model, weights, phase). In a child the net is built first and the weights
    copied after, each under its own file's name (`shown_as`: the name of `model` to give,
    when `model` is a temporary copy); `options` (level, stages) go to pycaffe's Net."""
    if not inside():
        if options:
            return caffe.Net(model, phase, weights=weights, **options)
        return caffe.Net(model, weights, phase)
    name = shown_as or model
    using(name)
    net = caffe.Net(model, phase, **options)
    if weights:
        using(weights)
        net.copy_from(weights)
        using(name)
    return net


# ------------------------------------------------------------------------------- the parent

def run(func, *args, source, **kwargs):
    """func(*args, **kwargs) in a child process; returns its value, or raises the exception
    it raised. A child that dies (a failed CHECK, a crash) raises CaffeStopped naming the
    file it was `using`, else `source`. In a child already, func is simply called."""
    if inside():
        return func(*args, **kwargs)
    folder = tempfile.mkdtemp(prefix="deepmammo-caffe-")
    try:
        return _run_child(folder, func, args, kwargs, source)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _run_child(folder, func, args, kwargs, source):
    header = {"sys_path": list(sys.path), "parent": os.getpid(),
              "verbose": logging.getLogger().getEffectiveLevel() <= logging.DEBUG,
              "state": os.path.join(folder, "using.txt"),
              "result": os.path.join(folder, "result.pickle")}
    job = os.path.join(folder, "job.pickle")
    with open(job, "wb") as f:
        pickle.dump(header, f)
        pickle.dump((func, args, kwargs), f, protocol=pickle.HIGHEST_PROTOCOL)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    boot = (f"import sys; sys.path.insert(0, {root!r}); "
            "from deepmammo.caffe.real_child import child_main; child_main(sys.argv[1])")
    # Caffe logs everything to stderr (read here, shown as GLOG_minloglevel asks).
    env = dict(os.environ, GLOG_minloglevel="0", GLOG_logtostderr="1")
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    relay = Relay(sys.stderr, shown_level())
    proc = subprocess.Popen([sys.executable, "-c", boot, job], stdin=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=env)
    try:
        fd = proc.stderr.fileno()
        while True:
            data = os.read(fd, 1 << 16)
            if not data:
                break
            relay.feed(data)
        relay.feed(b"", final=True)
        rc = proc.wait()
    finally:
        if proc.poll() is None:  # Ctrl-C, or an error of ours: the child ends with us
            proc.kill()
            proc.wait()
        proc.stderr.close()
    outcome = _load(header["result"])
    if outcome is not None:
        kind, value, trace = outcome
        if kind == "value":
            return value
        if trace and hasattr(value, "add_note"):
            value.add_note("in real Caffe's child process:\n" + trace.rstrip())
        raise value
    what = failure_summary(list(relay.lines), signal_name(rc))
    raise CaffeStopped(f"{_read_text(header['state']) or source}: real Caffe stopped: {what}")


def shown_level():
    """The lowest glog severity of Caffe's to show: GLOG_minloglevel, as the user set it,
    else 2 (errors; what import_caffe sets)."""
    try:
        return int(os.environ.get("GLOG_minloglevel", "2"))
    except ValueError:
        return 2


def _load(path):
    if not os.path.isfile(path):
        return None
    with open(path, "rb") as f:
        return pickle.load(f)


def _read_text(path):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    except OSError:
        return ""


class Relay:
    """The child's stderr on its way to ours: written as it comes (a progress bar's partial
    line at once), every complete line kept (the last `keep`) for failure_summary. Caffe's
    lines below `level` are not shown, nor the dump that follows a hidden line ending in a
    colon (the net's parameters), nor anything from Caffe's fatal line on."""

    def __init__(self, out, level, keep=50000):
        self.out = out
        self.level = level
        self.lines = collections.deque(maxlen=keep)
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._line = ""         # the current line so far
        self._written = 0       # how much of it is already shown
        self._hiding_dump = False
        self._stopped = False

    def feed(self, data, final=False):
        text = self._decoder.decode(data, final)
        shown = []
        while text:
            head, newline, text = text.partition("\n")
            self._line += head + newline
            if newline:
                shown.append(self._complete())
        if self._line and self._streams():
            shown.append(self._line[self._written:])
            self._written = len(self._line)
        if final and self._line:
            shown.append(self._complete())
        text = "".join(shown)
        if text:
            self.out.write(text)
            self.out.flush()

    def _streams(self):
        """Whether the current unfinished line may be shown before its end: not a glog line
        (they start with their severity letter), nor hidden."""
        return (not self._stopped and not self._hiding_dump
                and self._line[0] not in SEVERITIES)

    def _complete(self):
        line, written = self._line, self._written
        self._line, self._written = "", 0
        bare = line.rstrip("\n")
        self.lines.append(bare)
        if written:
            return line[written:]
        return line if self._shown(bare) else ""

    def _shown(self, line):
        if self._stopped:
            return False
        parsed = parse_glog(line)
        if parsed is None:
            if line == BEFORE_INIT:
                return self.level <= 0
            return not self._hiding_dump
        severity, source, message = parsed
        self._hiding_dump = False
        if not is_caffes(source):
            return True
        if severity == "F":
            self._stopped = True      # the failure is said in one line, by run()
            return False
        shown = SEVERITIES.index(severity) >= self.level
        self._hiding_dump = not shown and message.rstrip().endswith(":")
        return shown


# -------------------------------------------------------------------------------- the child

def child_main(job):
    """The child's side of run(): call the job's function, write what came of it, exit."""
    global _state_path
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with open(job, "rb") as f:
        header = pickle.load(f)
        sys.path[:] = header["sys_path"]
        _die_with_parent(header["parent"])
        from deepmammo.caffe.train_log import setup_logging
        setup_logging(header["verbose"])
        _state_path = header["state"]
        try:
            func, args, kwargs = pickle.load(f)
            outcome = ("value", func(*args, **kwargs), None)
        except BaseException as exc:  # SystemExit too: the parent raises it
            outcome = ("error", _portable(exc), traceback.format_exc())
    try:
        data = pickle.dumps(outcome, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        data = pickle.dumps(("error", RuntimeError(f"the result could not be sent back: "
                                                   f"{exc}"), traceback.format_exc()))
    partial = header["result"] + ".part"
    with open(partial, "wb") as f:
        f.write(data)
    os.replace(partial, header["result"])
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    # No interpreter shutdown: pycaffe's objects need not be torn down for nothing.
    os._exit(0)


def _portable(exc):
    """`exc` if it survives pickling, else one of the kind the CLI treats alike (its message
    kept): an OSError, a ValueError, or a RuntimeError (a bug, shown with its traceback)."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        pass
    if isinstance(exc, OSError) and exc.strerror:
        return OSError(exc.errno, exc.strerror, exc.filename)
    if isinstance(exc, ValueError):
        return ValueError(str(exc))
    return RuntimeError(f"{type(exc).__name__}: {exc}")


def _die_with_parent(parent):
    """Have the kernel kill this child if its parent dies (Linux's PR_SET_PDEATHSIG), so that
    no child outlives a parent killed outright."""
    try:
        import ctypes
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)
