"""Write files and folders under a temporary name, then rename: a crash never leaves a
half-written output under its final name, and an earlier complete output stays until the
new one is whole.

Temporaries are named `.<name>.<pid>.<random>.tmp` beside the output, so that a later run can
tell the leftovers of a killed process (removed) from the work of a living one (kept), and
`output_lock` lets one process at a time build an output.
"""
import contextlib
import csv
import errno
import glob
import io
import logging
import os
import re
import shutil
import tempfile

log = logging.getLogger(__name__)

# Read once at import: os.umask can only be read by setting it, and setting it while other
# threads (Data-layer prefetch, workers) create files would race with them.
_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path, is_dir=False):
    """Yield a temporary path beside `path`; on success rename it to `path`.

    On an exception the temporary file or folder is removed and `path` is untouched.
    """
    path = os.fspath(path)
    parent = os.path.dirname(os.path.abspath(path)) or "."
    os.makedirs(parent, exist_ok=True)
    base = os.path.basename(path)
    prefix = f".{base}.{os.getpid()}."
    if is_dir:
        tmp = tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=parent)
    else:
        fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=parent)
        os.close(fd)
    # mkstemp/mkdtemp create 0600/0700; give the output the permissions an ordinary file or
    # folder would get, so Caffe running as another user can read it.
    os.chmod(tmp, (0o777 if is_dir else 0o666) & ~_UMASK)
    try:
        yield tmp
        if is_dir and os.path.isdir(path):
            # A folder cannot be replaced by rename: move the old one aside first.
            old = tmp + ".old"
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException as exc:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
        elif os.path.exists(tmp):
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        if isinstance(exc, OSError) and exc.filename is None and exc.errno:
            # A bare "No space left on device" from a write: say which output it was.
            raise type(exc)(exc.errno, exc.strerror, path) from exc
        raise


def write_bytes(path, data):
    """Write `data` to `path` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def write_text(path, text):
    """Write `text` (UTF-8) to `path` atomically."""
    write_bytes(path, text.encode("utf-8"))


def write_csv(path, columns, rows):
    """Write `rows` (dicts; missing cells empty, other keys ignored) under a header of
    `columns`, atomically, with Unix line ends: every CSV the pipeline writes."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore",
                            lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: "" if row.get(c) is None else row.get(c) for c in columns})
    write_text(path, buf.getvalue())


def check_output_folder(path):
    """An output folder may be replaced; an existing file may not (it is not ours to delete)."""
    if os.path.lexists(path) and not os.path.isdir(path):
        raise NotADirectoryError(errno.ENOTDIR, "exists and is not a folder; choose another "
                                 "output or remove it", os.fspath(path))


def check_output_file(path):
    """An output file may be replaced; an existing folder may not."""
    if os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, "is a folder; the output is a file (give a file "
                                "name)", os.fspath(path))


def pid_alive(pid):
    """True when process `pid` exists on this machine."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # exists, owned by someone else
        return True
    return True


def _temporary_pid(name, base):
    """The process id in a temporary's name, None for names without one (older runs)."""
    m = re.fullmatch(re.escape(f".{base}.") + r"(?:(\d+)\.)?.*\.tmp", name)
    return int(m.group(1)) if m and m.group(1) else None


def remove_stale_temporaries(path):
    """Remove the temporaries of `path` left by processes that are gone; keep a living
    process's. Returns the paths removed."""
    parent, base = os.path.split(os.path.abspath(os.fspath(path)))
    removed = []
    for stale in glob.glob(os.path.join(glob.escape(parent), glob.escape(f".{base}.") + "*.tmp")):
        pid = _temporary_pid(os.path.basename(stale), base)
        if pid is not None and (pid == os.getpid() or pid_alive(pid)):
            continue
        log.info("removing %s, left by a run that ended before finishing", stale)
        if os.path.isdir(stale) and not os.path.islink(stale):
            shutil.rmtree(stale, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.unlink(stale)
        removed.append(stale)
    return removed


class OutputLocked(OSError):
    """Another living process is building the same output."""


def lock_path(path):
    parent, base = os.path.split(os.path.abspath(os.fspath(path)))
    return os.path.join(parent, f".{base}.lock")


@contextlib.contextmanager
def output_lock(path):
    """Hold `.<name>.lock` (holding this process id) beside `path` while building it.

    A second build of the same output raises OutputLocked naming the holder; a lock whose
    process is gone (killed) is taken over. On entry, temporaries of dead runs are removed."""
    path = os.fspath(path)
    lock = lock_path(path)
    os.makedirs(os.path.dirname(lock), exist_ok=True)
    # The lock appears with its content at once (a hard link of a written file), so a reader
    # never sees an empty lock and mistakes it for a dead one.
    mine = f"{lock}.{os.getpid()}"
    with open(mine, "w") as f:
        f.write(f"{os.getpid()}\n")
    try:
        for _ in range(3):
            try:
                os.link(mine, lock)
                break
            except FileExistsError:
                holder = _lock_holder(lock)
                if holder is not None and pid_alive(holder):
                    raise OutputLocked(
                        errno.EBUSY, f"being built by process {holder} (lock file {lock}; wait "
                        "for it to finish)", path) from None
                log.info("taking over %s from process %s, which is gone", lock, holder)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(lock)
        else:
            raise OutputLocked(errno.EBUSY, f"could not take the lock file {lock}", path)
    finally:
        os.unlink(mine)
    try:
        remove_stale_temporaries(path)
        yield lock
    finally:
        with contextlib.suppress(OSError):
            if _lock_holder(lock) == os.getpid():
                os.unlink(lock)


def _lock_holder(lock):
    """The process id written in a lock file (None when unreadable or being written)."""
    try:
        with open(lock) as f:
            return int(f.read().strip() or "0") or None
    except (OSError, ValueError):
        return None
