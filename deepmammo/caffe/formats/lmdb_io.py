"""LMDB databases of Datum records, as Caffe's Data layer reads them.

Keys are `%08d_<name>` (convert_imageset's scheme); the Data layer reads them in key byte
order. A database is written under a temporary name beside its final path and renamed only
when complete, so a crash never leaves a half database under the final name.
"""
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

    def __init__(self, path, map_size=_INITIAL_MAP_SIZE, commit_every=_COMMIT_EVERY,
                 writemap=True):
        self.path = os.fspath(path)
        self.map_size = int(map_size)
        # writemap: records go straight into the memory map instead of malloc'd pages first;
        # with shuffled keys (as the dataset builder writes them) about 3x faster.
        self.writemap = writemap
        self.commit_every = commit_every
        self.count = 0
        self._pending = []
        self._ctx = None
        self._env = None

    def __enter__(self):
        self._ctx = atomic_path(self.path, is_dir=True)
        tmp = self._ctx.__enter__()
        self._env = lmdb.open(tmp, map_size=self.map_size, subdir=True, sync=False,
                              metasync=False, lock=True, writemap=self.writemap)
        return self

    def put(self, key, value):
        """Add one record (key str or bytes, value bytes)."""
        self._pending.append((_as_bytes(key), value))
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
            self.count += len(self._pending)
            self._pending = []

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is None:
                self._flush()
                self._env.sync(True)
        finally:
            self._env.close()
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
