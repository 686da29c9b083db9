import os
import stat

import pytest

from deepmammo import atomic
from deepmammo.atomic import atomic_path, write_text


def test_outputs_get_ordinary_permissions_not_mkstemps(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic, "_UMASK", 0o022)   # the process umask, read at import
    write_text(tmp_path / "a.csv", "x\n")
    with atomic_path(tmp_path / "db", is_dir=True) as tmp:
        open(os.path.join(tmp, "data.mdb"), "w").close()
    assert stat.S_IMODE(os.stat(tmp_path / "a.csv").st_mode) == 0o644
    assert stat.S_IMODE(os.stat(tmp_path / "db").st_mode) == 0o755


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    write_text(tmp_path / "a.csv", "old\n")
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "a.csv") as tmp:
            open(tmp, "w").write("half")
            raise RuntimeError("killed")
    assert (tmp_path / "a.csv").read_text() == "old\n"
    assert os.listdir(tmp_path) == ["a.csv"]
