"""The HTML report: every section of the page (sections.py) over the evaluated runs, written
into one folder.

reports/<name>/
  index.html                 the page (opens offline)
  report.json                every number on the page, with where it came from
  tables/table{1,2,3}.{md,csv}, tables/runs.md, claims, calibration and external tables
  figures/<figure>.{png,pdf}
  beyond/...                 ensembles, fusion, t-SNE (only when asked)
  model-cards/               each run's model card
"""
import json
import logging
import os

from deepmammo.atomic import write_text
from deepmammo.report import html
from deepmammo.report.collect import collect_runs
from deepmammo.report.context import Context
from deepmammo.report.extras import EXTRAS
from deepmammo.report.sections import SECTIONS

log = logging.getLogger(__name__)

BEYOND_CHOICES = tuple(EXTRAS)


def build_report(runs_root, out_dir, engine=None, overrides=None, extras=(), crops_path=None,
                 saliency_count=5, n_boot=1000, seed=0, title=None, runs=None,
                 compare_pairs=()):
    """Write the whole report folder; return the path of index.html. `runs` ({experiment:
    Run}) replaces collecting them from runs_root and overrides. compare_pairs: [(experiment
    A, experiment B)] tested beside the paper's pairwise claims. extras: names of the analyses
    past the paper to add (BEYOND_CHOICES)."""
    unknown = set(extras) - set(BEYOND_CHOICES)
    if unknown:
        raise ValueError("unknown report option(s) %s (choose from %s)"
                         % (sorted(unknown), ", ".join(BEYOND_CHOICES)))
    if runs is None:
        runs = collect_runs(runs_root, overrides)
    ctx = Context(runs, out_dir, engine=engine, crops_path=crops_path,
                  saliency_count=saliency_count, n_boot=n_boot, seed=seed,
                  compare_pairs=compare_pairs, extras=extras, runs_root=runs_root)
    sections = [(heading, body) for heading, body in ((h, fn(ctx)) for h, fn in SECTIONS)
                if body is not None]
    write_text(ctx.path("report.json"), json.dumps(ctx.data, indent=1, default=str) + "\n")
    index = ctx.path("index.html")
    from deepmammo.report.origin import synthetic_note
    write_text(index, html.render((title or "DeepMammo report: %s"
                                   % os.path.basename(os.path.abspath(out_dir)))
                                  + synthetic_note(ctx.origins), sections))
    log.info("report written: %s", index)
    return index
