"""What every figure and analysis of one report reads and where it writes: the runs, the
options, the folders, the records of the evaluated images (each LMDB read once however many
figures show it), and what the page collects (report.json's numbers, the runs' data origins).
"""
import os

import numpy as np

from deepmammo.evaluate import predict


class Figure:
    """The files one drawing made (a PNG, and a PDF when drawn) and its caption."""

    def __init__(self, key, caption, paths):
        self.key, self.caption = key, caption
        self.png = next(p for p in paths if p.endswith(".png"))
        self.pdf = next((p for p in paths if p.endswith(".pdf")), None)


class Context:
    """One report (or one `deepmammo figures` call): runs is {experiment: Run}; out_dir the
    report folder; figure_dir where the figures go (default out_dir/figures)."""

    def __init__(self, runs, out_dir, figure_dir=None, engine=None, crops_path=None,
                 saliency_count=5, n_boot=1000, seed=0, compare_pairs=(), extras=(),
                 runs_root=None):
        self.runs, self.out_dir = runs, out_dir
        self.figure_dir = figure_dir or os.path.join(out_dir, "figures")
        self.engine, self.crops_path, self.saliency_count = engine, crops_path, saliency_count
        self.n_boot, self.seed, self.compare_pairs = n_boot, seed, compare_pairs
        self.extras, self.runs_root = set(extras), runs_root
        self.data = {"tables": {}, "beyond": {}}  # report.json, in the page's order
        self.origins = []  # each run's data origin, for the page title's synthetic-data note
        self._records = {}

    def path(self, *parts):
        return os.path.join(self.out_dir, *parts)

    def figure_path(self, name):
        """The stem (no extension) of a figure file in figure_dir."""
        return os.path.join(self.figure_dir, name)

    def records(self, results):
        """(keys, images, labels) of the LMDB a results file was computed on."""
        if results.lmdb not in self._records:
            self._records[results.lmdb] = predict.read_records(results.lmdb)
        return self._records[results.lmdb]

    @staticmethod
    def mean(results):
        """The training mean a results file's images were scored with (None: none)."""
        if isinstance(results.mean, str):
            from deepmammo.caffe.formats.binaryproto import read_mean
            return read_mean(results.mean)
        return None if results.mean is None else np.asarray(results.mean, dtype=np.float32)

    def engine_for(self, results):
        """The engine that computes activations: the one asked for, else the results'."""
        return self.engine or results.engine or "torch"
