"""LMDB databases of Datum records, as Caffe's Data layer reads them.

Keys are `%08d_<name>` (convert_imageset's scheme); the Data layer reads them in key byte
order. A database is written under a temporary name beside its final path and renamed only
when complete, so a crash never leaves a half database under the final name.

The writer never uses LMDB's `writemap`: with it, records go straight into a shared memory
map of a sparse file, and a full disk then shows up as a SIGBUS when a page is first touched,
killing the process with no message and leaving the temporary database behind. Without it,
LMDB writes pages with write() at commit, and a full disk is an ordinary error (ENOSPC) that
the writer turns into an OSError naming the database and the space it needed.
"""
import errno
import os

import lmdb

from deepmammo.atomic import atomic_path
from deepmammo.caffe.formats.datum import datum_from_bytes, datum_to_bytes

_INITIAL_MAP_SIZE = 1 << 26      # 64 MiB; doubled whenever a transaction runs out of room
_COMMIT_EVERY = 1000


def lmdb_key(index, name):
    """Caffe's record key: zero-padded index, underscore, name."""
    return "%08d_%s" % (index, name)


def _as_bytes(key):
    return key if isinstance(key, bytes) else str(key).encode("utf-8")


class LMDBWriter:
    """Write key/value records into a new LMDB at `path` (a folder, as Caffe's are).

        with LMDBWriter(out) as db:
            db.put_datum(lmdb_key(i, name), datum)

    The database is built in a temporary folder and renamed to `path` on a clean exit; on an
    exception the temporary folder is removed and any earlier database at `path` is kept.
    """

    def __init__(self, path, map_size=_INITIAL_MAP_SIZE, commit_every=_COMMIT_EVERY):
        self.path = os.fspath(path)
        self.map_size = int(map_size)
        self.commit_every = commit_every
        self.count = 0
        self.bytes = 0          # keys and values handed to put() so far
        self._pending = []
        self._ctx = None
        self._env = None
        self._tmp = None

    def __enter__(self):
        self._ctx = atomic_path(self.path, is_dir=True)
        self._tmp = self._ctx.__enter__()
        try:
            self._env = lmdb.open(self._tmp, map_size=self.map_size, subdir=True, sync=False,
                                  metasync=False, lock=True, writemap=False)
        except BaseException as exc:
            self._ctx.__exit__(type(exc), exc, exc.__traceback__)
            if isinstance(exc, lmdb.Error):
                raise self._as_os_error(exc) from exc
            raise
        return self

    def put(self, key, value):
        """Add one record (key str or bytes, value bytes)."""
        key = _as_bytes(key)
        self.bytes += len(key) + len(value)
        self._pending.append((key, value))
        if len(self._pending) >= self.commit_every:
            self._flush()

    def put_datum(self, key, datum):
        self.put(key, datum_to_bytes(datum))

    def _flush(self):
        while self._pending:
            try:
                with self._env.begin(write=True) as txn:
                    for key, value in self._pending:
                        txn.put(key, value)
            except lmdb.MapFullError:
                # The whole transaction was aborted: grow the map and write it again.
                self.map_size *= 2
                self._env.set_mapsize(self.map_size)
                continue
            except lmdb.Error as exc:
                raise self._as_os_error(exc) from exc
            self.count += len(self._pending)
            self._pending = []

    def _as_os_error(self, exc):
        """An LMDB failure as the OSError a user can act on (no space, no permission)."""
        code = getattr(exc, "errno", None)
        text = str(exc)
        if code is None:
            for candidate, words in ((errno.ENOSPC, "No space left"),
                                     (errno.EACCES, "Permission denied"),
                                     (errno.EROFS, "Read-only file system"),
                                     (errno.EDQUOT, "Disk quota exceeded")):
                if words in text:
                    code = candidate
        if code in (None, errno.EIO) and self._disk_nearly_full():
            # LMDB reports a short write() on a full disk as EIO.
            code = errno.ENOSPC
        if code in (errno.ENOSPC, errno.EDQUOT):
            need, records = self.bytes / 2**20, self.count + len(self._pending)
            return OSError(code, f"{os.strerror(code)}: the database needs at least "
                                 f"{need:.1f} MiB ({records} records so far; the unfinished "
                                 "database was removed)", self.path)
        if isinstance(exc, OSError):
            return exc
        if code is not None:
            return OSError(code, f"{os.strerror(code)} ({text})", self.path)
        return OSError(errno.EIO, f"cannot write the database ({text})", self.path)

    def _disk_nearly_full(self):
        pending = sum(len(k) + len(v) for k, v in self._pending)
        try:
            st = os.statvfs(os.path.dirname(os.path.abspath(self.path)))
        except OSError:
            return False
        return st.f_bavail * st.f_frsize < pending + (4 << 20)

    def __exit__(self, exc_type, exc, tb):
        error = None
        try:
            if exc_type is None:
                self._flush()
                try:
                    self._env.sync(True)
                except lmdb.Error as sync_exc:
                    raise self._as_os_error(sync_exc) from sync_exc
        except BaseException as raised:
            error = raised
        finally:
            self._env.close()
        if error is not None:
            # The temporary database goes (atomic_path removes it) and the error is raised.
            self._ctx.__exit__(type(error), error, error.__traceback__)
            raise error
        return self._ctx.__exit__(exc_type, exc, tb)


class LMDBReader:
    """Read an LMDB's records in key order (the order Caffe's Data layer sees them)."""

    def __init__(self, path):
        self.path = os.fspath(path)
        if not os.path.isdir(self.path) or not os.path.isfile(os.path.join(self.path, "data.mdb")):
            raise FileNotFoundError(f"{self.path}: not an LMDB folder (no data.mdb)")
        self._env = lmdb.open(self.path, readonly=True, lock=False, readahead=False,
                              subdir=True, max_readers=64)

    def __len__(self):
        return self._env.stat()["entries"]

    def __iter__(self):
        """(key bytes, value bytes) pairs in key order."""
        with self._env.begin(buffers=False) as txn:
            for key, value in txn.cursor():
                yield key, value

    def datums(self):
        """(key str, Datum) pairs in key order."""
        for key, value in self:
            name = key.decode("utf-8", "replace")
            yield name, datum_from_bytes(value, where=f"{self.path}: record {name}")

    def close(self):
        self._env.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def count_records(path):
    """Number of records in the LMDB folder `path` (the database is closed again)."""
    with LMDBReader(path) as db:
        return len(db)
