"""Provenance carried by every output: config, seed, git commit, input hashes, versions."""
import datetime
import hashlib
import os
import platform
import subprocess
import sys


def git_commit(cwd=None):
    """The repository's HEAD commit (with '+dirty' when the tree has changes), or 'unknown'."""
    cwd = cwd or os.path.dirname(os.path.abspath(__file__))
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=cwd, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if not head:
        return "unknown"
    return head + ("+dirty" if dirty else "")


def file_sha1(path, chunk=1 << 20):
    """SHA-1 of a file's bytes (the hash BVLC uses for its model files)."""
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def tree_sha1(path):
    """SHA-1 over a folder's files (relative names and contents, in sorted order)."""
    if os.path.isfile(path):
        return file_sha1(path)
    h = hashlib.sha1()
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(root, name)
            h.update(os.path.relpath(full, path).encode())
            h.update(file_sha1(full).encode())
    return h.hexdigest()


def provenance(config=None, seed=None, inputs=()):
    """A JSON-ready record of how an output was made."""
    versions = {"python": platform.python_version()}
    for mod in ("numpy", "torch", "google.protobuf"):
        m = sys.modules.get(mod)
        if m is not None:
            versions[mod] = getattr(m, "__version__", "?")
    return {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "command": " ".join(sys.argv),
        "config": config,
        "seed": seed,
        "inputs": {os.fspath(p): tree_sha1(p) for p in inputs if os.path.exists(p)},
        "versions": versions,
        "host": platform.node(),
    }
