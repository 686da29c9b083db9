"""Write files and folders under a temporary name, then rename: a crash never leaves a
half-written output under its final name, and an earlier complete output stays until the
new one is whole."""
import contextlib
import os
import shutil
import tempfile

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
    if is_dir:
        tmp = tempfile.mkdtemp(prefix=f".{base}.", suffix=".tmp", dir=parent)
    else:
        fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=".tmp", dir=parent)
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
    except BaseException:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
        elif os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_bytes(path, data):
    """Write `data` to `path` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def write_text(path, text):
    """Write `text` (UTF-8) to `path` atomically."""
    write_bytes(path, text.encode("utf-8"))
