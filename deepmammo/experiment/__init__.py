"""Experiments: one YAML file per experiment (configs/<name>.yaml), resolved into a
self-contained run folder, trained through either engine, evaluated, repeated over seeds.

    config      defaults, merging, type-checked overrides; the list of experiments
    weights     the ImageNet weights registry (configs/weights.yaml) and the files' checks
    resolve     epochs -> iterations, the solver and the net pointed at the dataset
    rundir      the run folder, its provenance and the `latest` link
    training    training through either engine, evaluation, repeats over seeds
"""
from deepmammo.experiment.config import (
                                         ExperimentError,
                                         experiment_configs,
                                         experiment_names,
                                         load_config,
                                         parse_override,
                                         parse_value,
                                         variant_name,
)
from deepmammo.experiment.resolve import (
                                         dataset_paths,
                                         iterations,
                                         resolve_net,
                                         resolve_solver,
                                         set_solver_field,
)
from deepmammo.experiment.rundir import Run, prepare_run
from deepmammo.experiment.training import evaluate, run_experiment, train
from deepmammo.experiment.weights import find_weights, registry

__all__ = ["ExperimentError", "experiment_configs", "experiment_names", "load_config",
           "parse_override", "parse_value", "variant_name", "dataset_paths", "iterations",
           "resolve_net", "resolve_solver", "set_solver_field", "Run", "prepare_run",
           "evaluate", "run_experiment", "train", "find_weights", "registry"]
