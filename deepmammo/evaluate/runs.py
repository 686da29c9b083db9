"""A run folder evaluated: every snapshot on validation, then on test with the snapshot and
thresholds validation chose (what `deepmammo experiment --evaluate` does after training, and
`deepmammo eval-run`); or on the splits of another archive's dataset with that choice.

    val, test = evaluate_run("runs/levynet/latest", "data/datasets/ddsm/seed0/proportional2-none")

A run folder holds deploy.prototxt, train_val.prototxt (the mean, scale and crop of its TEST
Data layer) and the snapshots <experiment>_iter_N.caffemodel; the results go to its eval/.
"""
import os

from deepmammo.engine import DEFAULT_ENGINE, DEFAULT_PRECISION

SNAPSHOTS = "*_iter_*.caffemodel"


def evaluation_paths(folder):
    """(eval/val.json, eval/test.json) of a run folder."""
    return (os.path.join(folder, "eval", "val.json"),
            os.path.join(folder, "eval", "test.json"))


def external_path(folder, name, split):
    """eval/external-NAME-SPLIT.json of a run folder."""
    return os.path.join(folder, "eval", f"external-{name}-{split}.json")


def _run_files(folder, snapshots, deploy, train_val):
    return (snapshots or [os.path.join(folder, SNAPSHOTS)],
            deploy or os.path.join(folder, "deploy.prototxt"),
            train_val or os.path.join(folder, "train_val.prototxt"))


def evaluate_run(folder, dataset, engine=DEFAULT_ENGINE, gpu=None, precision=DEFAULT_PRECISION,
                 select_by=None, snapshots=None, deploy=None, train_val=None, on_result=None):
    """Every snapshot of the run on DATASET/val_lmdb (eval/val.json; the snapshot is chosen by
    `select_by`, default accuracy then recall), then on DATASET/test_lmdb scored also at the
    thresholds fitted on validation (eval/test.json). snapshots, deploy, train_val: the run
    folder's own unless given. on_result(results) is called after each split. Returns
    (val, test) results."""
    from deepmammo.evaluate.snapshots import evaluate
    snapshots, deploy, train_val = _run_files(folder, snapshots, deploy, train_val)
    val_out, test_out = evaluation_paths(folder)
    common = {"engine": engine, "train_val": train_val, "gpu": gpu, "precision": precision}
    kwargs = {"criteria": tuple(select_by)} if select_by else {}
    val = evaluate(deploy, snapshots, os.path.join(dataset, "val_lmdb"), val_out, **common,
                   **kwargs)
    if on_result:
        on_result(val)
    test = evaluate(deploy, snapshots, os.path.join(dataset, "test_lmdb"), test_out,
                    val_results=val_out, threshold="val", **common)
    if on_result:
        on_result(test)
    return val, test


def evaluate_external(folder, dataset, name, splits=("test",), engine=DEFAULT_ENGINE, gpu=None,
                      precision=DEFAULT_PRECISION, on_result=None):
    """Every snapshot of the run on each split of another archive's DATASET (built with the
    run's grey mapping), marked with the run's validation choice (eval/val.json):
    eval/external-NAME-SPLIT.json. Returns the results, one per split."""
    from deepmammo.evaluate.snapshots import evaluate
    snapshots, deploy, train_val = _run_files(folder, None, None, None)
    val_out, _ = evaluation_paths(folder)
    found = []
    for split in splits:
        results = evaluate(deploy, snapshots, os.path.join(dataset, f"{split}_lmdb"),
                           external_path(folder, name, split), engine=engine,
                           train_val=train_val, gpu=gpu, precision=precision,
                           val_results=val_out)
        if on_result:
            on_result(results)
        found.append(results)
    return found
