"""What a run folder says about its snapshots: iteration, fraction of training, epochs."""
import os

import numpy as np
import pytest
import yaml

from deepmammo.caffe.formats.datum import array_to_datum
from deepmammo.caffe.formats.lmdb_io import LMDBWriter, lmdb_key
from deepmammo.evaluate.runinfo import (
    expand_snapshots,
    find_run_dir,
    run_info,
    snapshot_iteration,
    training_progress,
)


def _run(tmp_path, epochs=None, with_train_val=False):
    run = tmp_path / "runs" / "levynet" / "20261126-013000"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"seed": 3, "epochs": epochs}))
    (run / "solver.prototxt").write_text("base_lr: 0.01\nmax_iter: 400\n")
    for it in (100, 400, 200):
        (run / ("levynet_iter_%d.caffemodel" % it)).write_bytes(b"x")
    if with_train_val:
        db = str(tmp_path / "train_lmdb")
        with LMDBWriter(db) as w:
            for i in range(50):
                w.put_datum(lmdb_key(i, "r"), array_to_datum(np.zeros((1, 2, 2), np.uint8)))
        (run / "train_val.prototxt").write_text(
            'layer { name: "d" type: "Data" top: "data" include { phase: TRAIN }\n'
            '  data_param { source: "%s" batch_size: 10 } }\n' % db)
    return str(run)


def test_snapshots_sort_by_iteration_and_know_their_run(tmp_path):
    run = _run(tmp_path, epochs=40)
    files = expand_snapshots(os.path.join(run, "*_iter_*.caffemodel"))
    assert [snapshot_iteration(f) for f in files] == [100, 200, 400]
    assert find_run_dir(files[0]) == run
    info = run_info(run)
    assert info["experiment"] == "levynet" and info["seed"] == 3 and info["max_iter"] == 400
    assert training_progress(200, info) == (0.5, 20.0)
    with pytest.raises(FileNotFoundError, match="no snapshot matches"):
        expand_snapshots(os.path.join(run, "*.solverstate"))


def test_epochs_from_the_training_set_and_batch(tmp_path):
    info = run_info(_run(tmp_path, with_train_val=True))
    assert info["iters_per_epoch"] == 5.0  # 50 records, batch 10
    assert training_progress(100, info) == (0.25, 20.0)
    assert run_info(None)["experiment"] is None
