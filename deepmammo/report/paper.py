"""The paper's published numbers (Jain & Levy, DeepMammo), for the rows our tables set beside
them. Each row names the experiment (configs/<experiment>.yaml, runs/<experiment>/) whose
results fill it, and which split and metrics it reports."""

# Table 1 (section 5.2): validation accuracy, fixed (50 px) vs proportional (2x) padding.
TABLE1 = {
    "title": "Table 1: influence of context around the mass (validation accuracy)",
    "split": "val",
    "metrics": ("accuracy",),
    "rows": [
        {"model": "AlexNet (No Aug - Small Context)", "experiment": "alexnet-noaug-small",
         "paper": {"accuracy": 0.64}},
        {"model": "AlexNet (No Aug - Large Context)", "experiment": "alexnet-noaug-large",
         "paper": {"accuracy": 0.71}},
    ],
}

# Table 2 (section 5.7): test set, the snapshot chosen on validation; # epochs of that snapshot.
TABLE2 = {
    "title": "Table 2: results on the test set",
    "split": "test",
    "metrics": ("accuracy", "precision", "recall", "epochs"),
    "rows": [
        {"model": "LevyNet (Aug - Large Context)", "experiment": "levynet",
         "paper": {"accuracy": 0.604, "precision": 0.587, "recall": 0.703, "epochs": 35}},
        {"model": "AlexNet (Aug - Large Context)", "experiment": "alexnet-aug-large",
         "paper": {"accuracy": 0.890, "precision": 0.908, "recall": 0.868, "epochs": 30}},
        {"model": "GoogLeNet (Aug - Large Context) - Shallow Training",
         "experiment": "googlenet-shallow",
         "paper": {"accuracy": 0.912, "precision": 0.921, "recall": 0.901, "epochs": 20}},
        {"model": "GoogLeNet (Aug - Large Context) - Deeper Training",
         "experiment": "googlenet-deeper",
         "paper": {"accuracy": 0.929, "precision": 0.924, "recall": 0.934, "epochs": 30}},
    ],
}

# Table 3 (section 5.6): validation precision and recall.
TABLE3 = {
    "title": "Table 3: model metrics on the validation set",
    "split": "val",
    "metrics": ("precision", "recall"),
    "rows": [
        {"model": "LevyNet", "experiment": "levynet",
         "paper": {"precision": 0.649, "recall": 0.692}},
        {"model": "AlexNet (Aug - Large Context)", "experiment": "alexnet-aug-large",
         "paper": {"precision": 0.904, "recall": 0.934}},
        {"model": "GoogLeNet - Shallow Training", "experiment": "googlenet-shallow",
         "paper": {"precision": 0.920, "recall": 0.890}},
        {"model": "GoogLeNet - Deeper Training", "experiment": "googlenet-deeper",
         "paper": {"precision": 0.912, "recall": 0.923}},
    ],
}

TABLES = {"table1": TABLE1, "table2": TABLE2, "table3": TABLE3}

# Figure 4 context (section 5.4): four snapshots per GoogLeNet run at quarter points; the x-axis
# is the fraction of the run's epochs (40 Deeper, 20 Shallow); Deeper is best at 0.75 (30 epochs).
FIGURE4 = {
    "experiments": ("googlenet-deeper", "googlenet-shallow"),
    "total_epochs": {"googlenet-deeper": 40, "googlenet-shallow": 20},
    "paper_best_fraction": {"googlenet-deeper": 0.75},
}

# Section 5.3 / Figure 3: AlexNet validation figures without and with augmentation.
FIGURE3 = {
    "experiments": ("alexnet-noaug-large", "alexnet-aug-large"),
    "paper": {"alexnet-noaug-large": {"accuracy": 0.67, "recall": 0.66},
              "alexnet-aug-large": {"accuracy": 0.90, "recall": 0.93}},
}

# Figure 2: learning curves of the top two models.
FIGURE2 = {"experiments": ("alexnet-aug-large", "googlenet-deeper")}

# Section 3: the paper's split sizes (images / patients).
SPLITS = {"train": (1456, 807), "val": (182, 94), "test": (182, 96)}
