"""The report world of tests/worlds.py is what the evaluation and report tests assume: 16
patients x 2 views per split in each LMDB, two runs with four snapshots each."""
import os

from worlds import build_world

from deepmammo.caffe.formats.lmdb_io import LMDBReader


def test_world_is_consistent(tmp_path):
    world = build_world(str(tmp_path))
    assert len(LMDBReader(os.path.join(world["data"], "val_lmdb"))) == 32
    assert len(LMDBReader(os.path.join(world["data"], "test_lmdb"))) == 32
    assert len(os.listdir(world["runs"]["levynet"])) == 8
    assert sorted(f for f in os.listdir(world["runs"]["googlenet-deeper"])
                  if f.endswith(".caffemodel")) == [
        "googlenet-deeper_iter_%d.caffemodel" % it for it in (100, 25, 50, 75)]
