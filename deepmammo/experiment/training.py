"""Training a prepared run through either engine, evaluating it, and repeating it over seeds.

    config = load_config("configs/levynet.yaml", ["dataset=data/datasets/x", "seeds=1,2,3"])
    runs = run_experiment(config, evaluate=True)   # one run folder per seed, evaluated

Training is `deepmammo train` as a library call (deepmammo.caffe.train.train): our engine
in this process, real Caffe's `caffe train` in a child process whose output is read as it
comes. Evaluation is deepmammo.evaluate.runs.evaluate_run (`deepmammo eval-run`): every
snapshot on validation, then on test with the snapshot and threshold chosen on validation.
"""
import datetime
import logging
import os

from deepmammo.experiment.config import ExperimentError
from deepmammo.experiment.rundir import prepare_run, timestamp, update_provenance

log = logging.getLogger(__name__)


def _train_options(run):
    config = run.config
    options = {"engine": config["engine"], "log": run.log_path,
               "precision": config.get("precision") or "fp32"}
    if run.weights:
        options["weights"] = run.weights
    if config["device"] == "cuda":
        options["gpu"] = str(config.get("gpu") or "0")
    return options


def train(run):
    """Train the prepared run on its resolved solver; record the snapshots it left in
    provenance.json and return their names."""
    from deepmammo.caffe.train import train as train_solver
    config = run.config
    log.info("experiment %s (seed %s): training %s with engine %s on %s%s",
             config["experiment"], config.get("seed"), run.solver_path, config["engine"],
             config["device"], " (FROM_SCRATCH)" if run.from_scratch else "")
    started = datetime.datetime.now(datetime.timezone.utc)
    train_solver(run.solver_path, **_train_options(run))
    seconds = (datetime.datetime.now(datetime.timezone.utc) - started).total_seconds()
    found = run.snapshots()
    update_provenance(run, "training", {
        "started": started.isoformat(timespec="seconds"), "seconds": round(seconds, 1),
        "engine": config["engine"], "device": config["device"],
        "precision": config.get("precision") or "fp32", "snapshots": found,
        "random_stream": random_stream(run)})
    return found


def random_stream(run):
    """Which random numbers the run drew: the torch engine logs the stream it seeded (Caffe's
    CPU streams, docs/random-streams.md); real Caffe draws its own."""
    if run.config["engine"] == "caffe":
        return f"real Caffe's own (random_seed {run.config.get('seed')})"
    found = None
    try:
        with open(run.log_path, "r", encoding="utf-8", errors="replace") as f:
            for line in f:
                if "] Random stream: " in line:  # the last one: a resumed run logs again
                    found = line.split("] Random stream: ", 1)[1].strip()
    except OSError:
        pass
    return found


def evaluate(run, select_by=None):
    """Every snapshot on the validation LMDB, then on test with the validation choice:
    eval/val.json and eval/test.json in the run folder (deepmammo.evaluate.runs), then the
    model card. Returns (val, test) results."""
    from deepmammo.evaluate.runs import evaluate_run
    from deepmammo.report.model_card import write_card
    if not run.deploy_path:
        raise ExperimentError(f"{run.config['config_file']}: no deploy prototxt to evaluate "
                              "with (set deploy:)")
    snapshots = [os.path.join(run.folder, name) for name in run.snapshots()]
    if not snapshots:
        raise ExperimentError(f"{run.folder}: training left no snapshots to evaluate")
    config = run.config
    val, test = evaluate_run(run.folder, run.dataset, engine=config["engine"],
                             gpu=0 if config["device"] == "cuda" else None,
                             precision=config.get("precision") or "fp32", select_by=select_by,
                             snapshots=snapshots, deploy=run.deploy_path,
                             train_val=run.train_val_path)
    write_card(run.folder)   # model-card.md/.json: the run described from its own records
    return val, test


def seed_configs(config):
    """One config per training seed: the config itself when it has no `seeds`, else copies
    with `seed` set and a shared `repeat_group` (runs/<experiment>/<timestamp>-seed<N>)."""
    seeds = config.get("seeds")
    if not seeds:
        return [config]
    group = config.get("repeat_group") or f"{config['experiment']}/{timestamp()}"
    return [dict(config, seed=seed, repeat_group=group) for seed in seeds]


def run_experiment(config, dry_run=False, evaluate_runs=False, select_by=None, on_run=None,
                   on_done=None):
    """Prepare (and unless dry_run train, and if asked evaluate) one run per seed.

    on_run(run) is called once each run folder is prepared, on_done(run) once it is trained
    (and evaluated): the CLI prints them as they come."""
    runs = []
    for one in seed_configs(config):
        run = prepare_run(one, dry_run=dry_run, stamp=_group_stamp(one))
        if on_run:
            on_run(run)
        runs.append(run)
        if dry_run:
            continue
        train(run)
        if evaluate_runs:
            evaluate(run, select_by)
        if on_done:
            on_done(run)
    return runs


def _group_stamp(config):
    """A repeat group's runs share its timestamp in their folder names."""
    group = config.get("repeat_group")
    return group.rsplit("/", 1)[-1] if group else None
