"""Reading real Caffe's output: glog lines, and what stopped it, in one line.

Real Caffe runs in child processes here (its `caffe` tool for train and time, pycaffe for
test, eval and the report's figures: real_train.py, real_child.py). Whatever ends the child —
a `Check failed` (glog's fatal line, then abort), a line the protobuf parser printed before
it, a Python layer's exception — is read back from its output by `failure_summary`.
"""
import re
import signal

# glog's line prefix: severity, date (mmdd, or yyyymmdd in newer glog), time, thread,
# file:line. Our own log lines (GlogFormatter) have the same shape, with a .py source.
_GLOG = re.compile(r"^([IWEF])\d{4}(?:\d{4})? \d\d:\d\d:\d\d\.\d+\s+\d+ ([^\]]*)\] ?(.*)$")
_PROTOBUF = re.compile(r"^\[libprotobuf (?:ERROR|FATAL) [^\]]*\] (.*)$")
_PYTHON_EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*(?:Error|Exception|Exit)(?:: .*)?$")
_CREATING_LAYER = re.compile(r"Creating [Ll]ayer (\S+)")
_NET_FILE = re.compile(r"net \(#\d+\) specified by net file: (\S+)|net from net file: (\S+)")

SEVERITIES = "IWEF"          # glog's levels 0..3, as GLOG_minloglevel numbers them
# What glog prints once when a program logs without having called InitGoogleLogging
# (pycaffe does not call it unless a script calls caffe.init_log()).
BEFORE_INIT = "WARNING: Logging before InitGoogleLogging() is written to STDERR"


def parse_glog(line):
    """(severity letter, source "file.cpp:123", message) of a glog line, else None."""
    m = _GLOG.match(line)
    return m.groups() if m else None


def is_caffes(source):
    """Whether a glog line's source is Caffe's C++ (not our own Python's log lines)."""
    return not source.split(":", 1)[0].endswith(".py")


def signal_name(returncode):
    """The name of the signal that ended a child (a negative return code), else None."""
    if returncode is None or returncode >= 0:
        return None
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"


def failure_summary(lines, signal_name=None):
    """What Caffe's child said when it stopped, in one line: its fatal glog line (with the
    protobuf parser's complaint before it, if any), else the exception a Python layer raised,
    else its last error line; then, if a net was still being set up, which layer (of which
    net file, when the log names it). `signal_name`: the signal that ended the child, said
    when nothing it printed explains it."""
    fatal, protobuf, python, errors, terminate = None, [], None, [], None
    layer = net_file = None
    scaffolding_done = False
    for line in lines:
        parsed = parse_glog(line)
        if parsed:
            severity, _, message = parsed
            if severity == "F" and fatal is None:
                fatal = message
            elif severity == "E":
                errors.append(message)
            if "Solver scaffolding done" in message:
                scaffolding_done = True
            if fatal is None and "Network initialization done" in message:
                layer = None      # that net is set up: what fails next is not its setup
            hit = _CREATING_LAYER.search(message)
            if hit and fatal is None:
                layer = hit.group(1)
            hit = _NET_FILE.search(message)
            if hit:
                net_file = hit.group(1) or hit.group(2)
            continue
        m = _PROTOBUF.match(line)
        if m:
            protobuf.append(m.group(1))
        elif _PYTHON_EXCEPTION.match(line.strip()):
            python = line.strip()
        elif line.startswith("terminate called after throwing") and terminate is None:
            terminate = line.strip()
    if fatal is not None:
        what = fatal.strip() + (f" ({'; '.join(protobuf)})" if protobuf else "")
    elif python is not None:
        what = python
    elif terminate is not None and "error_already_set" in terminate:
        # Caffe lets an exception of a Python layer's own code end the process unprinted.
        what = ("a Python layer raised an exception, which Caffe's tool does not print (run "
                "the net in pycaffe, or with --engine torch, to see it)")
    elif signal_name is not None:
        what = f"killed by {signal_name}" + (f" after: {errors[-1]}" if errors else "")
    elif errors:
        what = errors[-1]
    elif terminate is not None:
        what = terminate
    else:
        # The last line that is not part of glog's stack dump.
        what = next((line.strip() for line in reversed(lines) if line.strip() and not
                     line.lstrip().startswith(("@", "***", "PC:"))), "no output")
    if not scaffolding_done and layer is not None:
        where = f"layer {layer!r}" + (f" of {net_file}" if net_file else "")
        what += f" (setting up {where})"
    if python is not None and fatal is None:
        what += ("; Python layer modules are imported from the current folder, the net "
                 "prototxt's folder and PYTHONPATH")
    return what
