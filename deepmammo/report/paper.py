"""The paper's published numbers (Jain & Levy, DeepMammo), for the rows our tables set beside
them. The numbers live in the experiment configs (`paper:` in configs/<experiment>.yaml: the
rows and figures each experiment fills); this module holds what belongs to the tables
themselves (title, split, metrics) and assembles the rows from the configs, in the paper's
row order.
"""
import functools

# What each of the paper's tables reports; the rows come from the configs.
TABLE_SPECS = {
    # Table 1 (section 5.2): validation accuracy, fixed (50 px) vs proportional (2x) padding.
    "table1": {"title": "Table 1: influence of context around the mass (validation accuracy)",
               "split": "val", "metrics": ("accuracy",)},
    # Table 2 (section 5.7): test set, the snapshot chosen on validation; # epochs of it.
    "table2": {"title": "Table 2: results on the test set", "split": "test",
               "metrics": ("accuracy", "precision", "recall", "epochs")},
    # Table 3 (section 5.6): validation precision and recall.
    "table3": {"title": "Table 3: model metrics on the validation set", "split": "val",
               "metrics": ("precision", "recall")},
}

# Section 3: the paper's split sizes (images / patients).
SPLITS = {"train": (1456, 807), "val": (182, 94), "test": (182, 96)}


@functools.lru_cache(maxsize=None)
def _configs():
    from deepmammo.experiment.config import experiment_configs
    return experiment_configs()


def tables():
    """{"table1": {"title", "split", "metrics", "rows": [{"model", "experiment", "paper"}]}}"""
    out = {}
    for name, spec in TABLE_SPECS.items():
        rows = []
        for experiment, config in _configs().items():
            entry = (config.get("paper") or {}).get(name)
            if entry is None:
                continue
            numbers = {k: v for k, v in entry.items() if k in spec["metrics"]}
            rows.append((entry.get("row", 99), experiment,
                         {"model": entry.get("model", experiment), "experiment": experiment,
                          "paper": numbers}))
        out[name] = dict(spec, rows=[row for _, _, row in sorted(rows, key=lambda r: r[:2])])
    return out


def figure_experiments(figure):
    """{experiment: its `paper: <figure>:` entry} for the experiments that feed `figure`."""
    return {e: (c.get("paper") or {})[figure] or {} for e, c in _configs().items()
            if figure in (c.get("paper") or {})}


def experiment_order():
    """Experiments in the paper's order: by their first table row, then by name."""
    first = {}
    for number, (_, table) in enumerate(sorted(tables().items())):
        for row_index, row in enumerate(table["rows"]):
            first.setdefault(row["experiment"], (number, row_index))
    return tuple(sorted(first, key=lambda e: first[e]))


def _figure4():
    feeds = figure_experiments("figure4")
    # the x-axis is the fraction of each run's epochs (its config's `epochs`)
    return {"experiments": tuple(sorted(feeds)),
            "total_epochs": {e: _configs()[e].get("epochs") for e in feeds},
            "paper_best_fraction": {e: v["best_fraction"] for e, v in feeds.items()
                                    if "best_fraction" in v}}


def __getattr__(name):
    # The names the report used before the numbers moved into the configs.
    if name == "TABLES":
        return tables()
    if name in ("TABLE1", "TABLE2", "TABLE3"):
        return tables()[name.lower()]
    if name == "FIGURE2":
        return {"experiments": tuple(sorted(figure_experiments("figure2")))}
    if name == "FIGURE3":
        feeds = figure_experiments("figure3")
        return {"experiments": tuple(sorted(feeds, key=lambda e: "noaug" not in e)),
                "paper": feeds}
    if name == "FIGURE4":
        return _figure4()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
