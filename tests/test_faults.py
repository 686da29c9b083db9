"""Faults a user meets: a full disk, a read-only or wrong output, a kill in the middle of a
build or of a snapshot write, two builds of one output, a script that never closes its net.
Each leaves the previous good output or nothing under the final name, and ends as one line
(see docs/errors.md for the table of what is left on disk)."""
import contextlib
import errno
import glob
import os
import signal
import subprocess
import sys
import time

import lmdb
import numpy as np
import pytest
from helpers import env, error_line, run_cli
from worlds import make_archive

from deepmammo import atomic
from deepmammo.caffe.formats import lmdb_io
from deepmammo.caffe.formats.caffemodel import read_caffemodel
from deepmammo.caffe.formats.lmdb_io import LMDBWriter
from deepmammo.caffe.formats.solverstate import read_solverstate
from deepmammo.caffe.scenario import make_data, write_solver
from deepmammo.prep.build import build_lmdbs
from deepmammo.prep.crops import build_crops, read_crops
from deepmammo.prep.split import make_split, write_split


def leftovers(folder):
    """Temporaries, partial folders and locks under `folder`."""
    return sorted(p for p in glob.glob(os.path.join(folder, ".*")) + glob.glob(
        os.path.join(folder, "*.partial")))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    cases = make_archive(str(root / "arch"), n_patients=12, seed=3)
    crops_dir = str(root / "crops")
    build_crops(cases, crops_dir, "fixed:20", workers=1)
    crops = read_crops(crops_dir)
    splits = str(root / "splits.csv")
    write_split(crops, make_split(crops, seed=1), splits, {"seed": 1})
    return cases, crops_dir, splits


@contextlib.contextmanager
def small_filesystem(path, size="2m", options=""):
    """A tmpfs of `size` at `path` when this process may mount one (root), else None."""
    os.makedirs(path, exist_ok=True)
    if os.geteuid() != 0:
        yield None
        return
    opts = f"size={size}" + (f",{options}" if options else "")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        yield None
        return
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


class _FullDiskEnv:
    """An LMDB environment whose commits fail as on a full disk (LMDB's own error)."""

    def __init__(self, env, after):
        self._env, self._left = env, after

    def begin(self, write=False, **kw):
        txn = self._env.begin(write=write, **kw)
        if write:
            self._left -= 1
            if self._left < 0:
                txn.abort()
                raise lmdb.DiskError("mdb_txn_commit: No space left on device")
        return txn

    def __getattr__(self, name):
        return getattr(self._env, name)


# ----------------------------------------------------------------------------- disk full

@pytest.mark.subprocess
def test_disk_full_during_lmdb_build_is_one_line_and_leaves_nothing(dataset, tmp_path,
                                                                    monkeypatch, capsys):
    _, crops_dir, splits = dataset
    with small_filesystem(tmp_path / "small") as mounted:
        if mounted:
            print("disk full: a 2 MiB tmpfs")
            out = mounted / "db"
            proc = run_cli("lmdb", crops_dir, "--splits", splits, "--out", out,
                           "--size", 96, "--workers", 1)
            line = error_line("lmdb", proc.returncode, proc.stderr, "No space left on device",
                              "MiB")
            assert os.listdir(mounted) == [], (line, os.listdir(mounted))
        else:
            print("disk full: mounting refused, a fake full-disk LMDB environment")
    # The fake writer runs every time, so the code path holds without a mount too.
    real_open = lmdb_io.lmdb.open
    monkeypatch.setattr(lmdb_io.lmdb, "open",
                        lambda *a, **k: _FullDiskEnv(real_open(*a, **k), after=0))
    monkeypatch.setattr(lmdb_io.LMDBWriter, "_disk_nearly_full", lambda self: False)
    out = tmp_path / "fake" / "db"
    os.makedirs(out)
    (out / "previous").write_text("good\n")
    with pytest.raises(OSError) as info:
        build_lmdbs(crops_dir, splits, str(out), size=32, workers=1)
    assert info.value.errno == errno.ENOSPC and str(out) in str(info.value.filename)
    assert (out / "previous").read_text() == "good\n"
    assert leftovers(tmp_path / "fake") == []
    assert "disk full:" in capsys.readouterr().out


@pytest.mark.subprocess
def test_disk_full_during_crops_leaves_no_partial_folder(dataset, tmp_path, monkeypatch,
                                                         capsys):
    cases, _, _ = dataset
    with small_filesystem(tmp_path / "small", size="64k") as mounted:
        if mounted:
            print("crops disk full: a 64 KiB tmpfs")
            proc = run_cli("crops", cases, "--out", mounted / "crops", "--workers", 1)
            error_line("crops", proc.returncode, proc.stderr, "No space left on device")
            assert os.listdir(mounted) == []
        else:
            print("crops disk full: mounting refused, a fake full-disk PNG writer")
    from deepmammo.prep import crops as crops_mod

    def full(path, array, compress_level=6):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(crops_mod, "write_png", full)
    with pytest.raises(OSError) as info:
        build_crops(cases, str(tmp_path / "fake" / "crops"), workers=1)
    assert info.value.errno == errno.ENOSPC and "crops.partial" in info.value.filename
    assert os.listdir(tmp_path / "fake") == []
    assert "crops disk full:" in capsys.readouterr().out


@pytest.mark.subprocess
def test_disk_full_during_ingest_leaves_no_masks_and_no_table(tmp_path, monkeypatch, capsys):
    from deepmammo.sources import ingestion
    from deepmammo.sources.synth import make_archive as synth_archive
    arch = tmp_path / "arch"
    synth_archive("ddsm", str(arch), patients=3, seed=0, size=(120, 80), quirks=False)
    with small_filesystem(tmp_path / "small", size="16k") as mounted:
        if mounted:
            print("ingest disk full: a 16 KiB tmpfs")
            proc = run_cli("ingest", "ddsm", arch, "--out", mounted / "cases.csv")
            error_line("ingest", proc.returncode, proc.stderr, "No space left on device")
            assert os.listdir(mounted) == []
        else:
            print("ingest disk full: mounting refused, a fake full-disk PNG writer")

    def full(path, array):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ingestion.images, "write_png", full)
    out = tmp_path / "fake"
    out.mkdir()
    with pytest.raises(OSError) as info:
        ingestion.ingest("ddsm", str(arch), str(out / "cases.csv"))
    assert info.value.errno == errno.ENOSPC
    assert os.listdir(out) == []                     # no cases.csv, no cases_masks/
    assert "ingest disk full:" in capsys.readouterr().out


# ----------------------------------------------------------------------------- read-only, file

@pytest.mark.subprocess
def test_read_only_output_folder(dataset, tmp_path, capsys):
    _, crops_dir, splits = dataset
    with small_filesystem(tmp_path / "ro", options="ro") as mounted:
        folder = mounted
        if folder is None:   # not root: a folder without write permission does the same
            folder = tmp_path / "ro"
            os.chmod(folder, 0o555)
        print("read-only:", "a read-only tmpfs" if mounted else "chmod 555")
        proc = run_cli("lmdb", crops_dir, "--splits", splits, "--out", folder / "db",
                       "--size", 32, "--workers", 1)
        error_line("lmdb", proc.returncode, proc.stderr, folder, "Read-only file system" if mounted
                   else "Permission denied")
        assert os.listdir(folder) == []


@pytest.mark.subprocess
def test_lmdb_out_naming_a_file_keeps_the_file(dataset, tmp_path):
    _, crops_dir, splits = dataset
    out = tmp_path / "db"
    out.write_text("not mine to delete\n")
    proc = run_cli("lmdb", crops_dir, "--splits", splits, "--out", out, "--size", 32)
    error_line("lmdb", proc.returncode, proc.stderr, out, "not a folder")
    assert out.read_text() == "not mine to delete\n" and leftovers(tmp_path) == []


# ----------------------------------------------------------------------------- kills

@pytest.mark.subprocess
def test_kill_during_lmdb_build_keeps_the_previous_build_and_the_next_run_cleans_up(
        dataset, tmp_path):
    _, crops_dir, splits = dataset
    out = tmp_path / "db"
    assert run_cli("lmdb", crops_dir, "--splits", splits, "--out", out, "--size", 32,
                   "--augment", "none", "--workers", 1).returncode == 0
    before = (out / "build.json").read_bytes()
    proc = subprocess.Popen([sys.executable, "-m", "deepmammo", "lmdb", crops_dir, "--splits",
                             splits, "--out", str(out), "--size", "96", "--workers", "1"],
                            env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not glob.glob(str(tmp_path / f".db.{proc.pid}.*.tmp")) and time.time() < deadline:
        assert proc.poll() is None, "the build ended before it could be killed"
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    assert (out / "build.json").read_bytes() == before          # the previous build, whole
    assert glob.glob(str(tmp_path / f".db.{proc.pid}.*.tmp"))    # the killed run's leftovers
    assert os.path.exists(tmp_path / ".db.lock")                 # and its lock
    proc = run_cli("lmdb", crops_dir, "--splits", splits, "--out", out, "--size", 32,
                   "--workers", 1)
    assert proc.returncode == 0, proc.stderr
    assert leftovers(tmp_path) == []                             # both removed: pid is gone


def interrupt_when_locked(lock, command, *args):
    """Run `deepmammo COMMAND ARGS`, press Ctrl-C as soon as it holds `lock` (a small build
    may finish within a second), and check it ends with the one `interrupted` line."""
    # A session of its own: Ctrl-C at a terminal reaches the whole process group (workers too).
    proc = subprocess.Popen([sys.executable, "-m", "deepmammo", command, *map(str, args)],
                            env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    deadline = time.time() + 120
    while not os.path.exists(lock) and time.time() < deadline:
        assert proc.poll() is None, f"{command} ended before it could be interrupted"
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    # 130, or SIGINT's own status (the shell reports both as 130): rarely the interpreter ends
    # by re-raising the signal after the line is printed.
    assert proc.returncode in (130, -signal.SIGINT) and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == f"deepmammo {command}: interrupted"


@pytest.mark.subprocess
@pytest.mark.parametrize("workers", [1, 2])
def test_ctrl_c_during_lmdb_build_is_one_line_and_leaves_the_previous_build(dataset, tmp_path,
                                                                            workers):
    _, crops_dir, splits = dataset
    out = tmp_path / "db"
    assert run_cli("lmdb", crops_dir, "--splits", splits, "--out", out, "--size", 32,
                   "--augment", "none", "--workers", 1).returncode == 0
    before = (out / "build.json").read_bytes()
    interrupt_when_locked(tmp_path / ".db.lock", "lmdb", crops_dir, "--splits", splits,
                          "--out", out, "--size", 224, "--workers", workers)
    assert (out / "build.json").read_bytes() == before
    assert leftovers(tmp_path) == []          # Ctrl-C cleans up: temporaries and lock go


def _die_on_three(x):
    if x == 3:
        os.kill(os.getpid(), signal.SIGKILL)     # as the out-of-memory killer would
    return x


def test_a_worker_killed_mid_build_is_an_error_not_a_hang():
    from deepmammo.prep.parallel import run_tasks
    with pytest.raises(ChildProcessError, match="worker process died"):
        list(run_tasks(_die_on_three, range(8), workers=2))


@pytest.mark.subprocess
def test_ctrl_c_during_crops_is_one_line_and_the_next_run_completes(dataset, tmp_path):
    cases, _, _ = dataset
    out = tmp_path / "crops"
    interrupt_when_locked(tmp_path / ".crops.lock", "crops", cases, "--out", out,
                          "--workers", 2)
    assert not out.exists() and not os.path.exists(tmp_path / ".crops.lock")
    proc = run_cli("crops", cases, "--out", out, "--workers", 2)
    assert proc.returncode == 0, proc.stderr
    assert (out / "crops.csv").is_file() and leftovers(tmp_path) == []


KILL_IN_SNAPSHOT = """
import os, signal, sys
from deepmammo.caffe.solvers import get_solver
real_replace = os.replace
def replace(src, dst):
    if str(dst).endswith("_iter_4.caffemodel"):
        with open(src, "r+b") as f:      # half the file is on disk when the kill comes
            f.truncate(os.path.getsize(src) // 2)
        os.kill(os.getpid(), signal.SIGKILL)
    return real_replace(src, dst)
os.replace = replace
get_solver(sys.argv[1]).solve()
"""


@pytest.mark.subprocess
def test_kill_during_a_snapshot_write_leaves_the_previous_snapshot(tmp_path):
    root = str(tmp_path)
    net = make_data(root)
    solver = write_solver(root, "s", 'type: "SGD" base_lr: 0.01 lr_policy: "fixed" '
                                     "max_iter: 6 snapshot: 2", net)
    proc = subprocess.run([sys.executable, "-c", KILL_IN_SNAPSHOT, solver], env=env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert not os.path.exists(os.path.join(root, "s_iter_4.caffemodel"))
    read_caffemodel(os.path.join(root, "s_iter_2.caffemodel"))        # whole and readable
    assert read_solverstate(os.path.join(root, "s_iter_2.solverstate")).iter == 2
    # What the kill left is a temporary beside it, never a file under a snapshot's name.
    assert [os.path.basename(p) for p in glob.glob(os.path.join(root, ".s_iter_4*"))]
    # Resuming writes that snapshot again and takes the dead process's temporary away.
    resumed = run_cli("train", "--solver", solver, "--snapshot",
                      os.path.join(root, "s_iter_2.solverstate"), timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    read_caffemodel(os.path.join(root, "s_iter_4.caffemodel"))
    assert glob.glob(os.path.join(root, ".s_iter_*")) == []


# ----------------------------------------------------------------------------- two builds

@pytest.mark.subprocess
def test_a_second_build_of_one_output_names_the_first_and_stale_work_is_kept_or_removed(
        dataset, tmp_path):
    _, crops_dir, splits = dataset
    out = tmp_path / "db"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        (tmp_path / ".db.lock").write_text(f"{holder.pid}\n")
        living = tmp_path / f".db.{holder.pid}.abc.tmp"
        living.mkdir()
        proc = run_cli("lmdb", crops_dir, "--splits", splits, "--out", out,
                       "--size", 32, "--augment", "none")
        error_line("lmdb", proc.returncode, proc.stderr, out, f"process {holder.pid}")
        assert living.is_dir() and not out.exists()
    finally:
        holder.kill()
        holder.wait()
    dead = tmp_path / ".db.999999999.xyz.tmp"     # no such process
    dead.mkdir()
    proc = run_cli("lmdb", crops_dir, "--splits", splits, "--out", out, "--size", 32,
                   "--augment", "none", "--workers", 1)
    assert proc.returncode == 0, proc.stderr
    assert leftovers(tmp_path) == [] and (out / "build.json").is_file()


@pytest.mark.subprocess
def test_two_real_builds_of_one_output_the_second_names_the_first(dataset, tmp_path):
    _, crops_dir, splits = dataset
    out = tmp_path / "db"
    first = subprocess.Popen([sys.executable, "-m", "deepmammo", "lmdb", crops_dir, "--splits",
                              splits, "--out", str(out), "--size", "224", "--workers", "1"],
                             env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True)
    deadline = time.time() + 120
    while not glob.glob(str(tmp_path / f".db.{first.pid}.*.tmp")) and time.time() < deadline:
        assert first.poll() is None, "the first build ended before the second started"
        time.sleep(0.02)
    # The second build starts in this process (a second command would spend its start-up
    # importing while the first finishes); the command's line is tested above.
    with pytest.raises(atomic.OutputLocked, match=f"process {first.pid}"):
        build_lmdbs(crops_dir, splits, str(out), size=32, workers=1)
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err                   # the first one was left alone
    assert (out / "build.json").is_file() and leftovers(tmp_path) == []


def test_output_lock_in_process(tmp_path):
    out = tmp_path / "x"
    with atomic.output_lock(out):
        with pytest.raises(atomic.OutputLocked, match=f"process {os.getpid()}"):
            with atomic.output_lock(out):
                pass
    assert not os.path.exists(atomic.lock_path(out))


# ----------------------------------------------------------------------------- LMDB writer

def test_the_lmdb_writer_never_uses_writemap(tmp_path, monkeypatch):
    seen = {}
    real_open = lmdb_io.lmdb.open

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real_open(*args, **kwargs)

    monkeypatch.setattr(lmdb_io.lmdb, "open", spy)
    with LMDBWriter(tmp_path / "db") as db:
        db.put(b"k", b"v")
    assert seen["writemap"] is False


# ----------------------------------------------------------------------------- threads at exit

EXIT_SCRIPT = """
import time
import deepmammo.caffe as caffe
net = caffe.Net("train_val.prototxt", caffe.TRAIN)
net.forward()
print(time.time(), flush=True)   # the script's last statement: what follows is the exit
"""


@pytest.mark.subprocess
def test_a_script_that_never_closes_its_net_exits_20_times_of_20(tmp_path):
    from deepmammo.caffe.formats.datum import array_to_datum
    from deepmammo.caffe.formats.lmdb_io import lmdb_key
    rng = np.random.RandomState(0)
    with LMDBWriter(tmp_path / "db") as db:
        for i in range(300):
            db.put_datum(lmdb_key(i, "x"), array_to_datum(
                rng.randint(0, 255, (3, 40, 40)).astype(np.uint8), i % 2))
    (tmp_path / "train_val.prototxt").write_text("""name: "t"
layer { name: "data" type: "Data" top: "data" top: "label"
  data_param { source: "db" batch_size: 64 backend: LMDB prefetch: 4 }
  transform_param { crop_size: 32 mirror: true } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param { num_output: 2 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
""")
    (tmp_path / "script.py").write_text(EXIT_SCRIPT)
    exited, exits = 0, []
    for _ in range(5):          # four at a time: 20 runs in the time of 5
        procs = [subprocess.Popen([sys.executable, "script.py"], cwd=tmp_path, env=env(),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for _ in range(4)]
        for proc in procs:
            try:   # a hang (the bug this guards against) never ends: the timeout catches it
                out, err = proc.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
                continue
            assert proc.returncode == 0, err.decode()
            exited += 1
            exits.append(time.time() - float(out.split()[-1]))
    print(f"{exited} of 20 runs exited; from the script's end to the exit: median "
          f"{np.median(exits):.2f} s, at most {max(exits):.2f} s")
    assert exited == 20
