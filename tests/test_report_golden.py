"""The report's text outputs, byte for byte: a fixed set of evaluated runs (results files and
predictions written here from fixed probabilities, no engine) gives exactly the tables
(Markdown, CSV, JSON), report.json and page stored in tests/fixtures/report_golden/.

The runs: levynet repeated over two seeds, googlenet-deeper once and also scored on another
archive's dataset. The report adds ensembles and fusion and one asked-for comparison; figures
that need images or logs are left out with a note, as on a real report without them.
After a deliberate change of the outputs, rewrite the fixtures with
DEEPMAMMO_UPDATE_GOLDEN=1 and review their diff.
"""
import json
import os
import re

import numpy as np
import yaml

from deepmammo.evaluate.calibration import rows_reliability
from deepmammo.evaluate.predict import write_predictions
from deepmammo.evaluate.select import choose_threshold, select_snapshot, snapshot_id
from deepmammo.evaluate.snapshots import score_rows
from deepmammo.report.build import build_report

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "report_golden")
N_BOOT = 20


def _predictions(skill, seed, patients=12):
    """Two views (CC, MLO) of one mass per patient, half of them malignant."""
    rng = np.random.RandomState(seed)
    rows = []
    for p in range(patients):
        label = p % 2
        for view in ("CC", "MLO"):
            crop_id = "P%02d_RIGHT_%s_1" % (p, view)
            prob = round(float(np.clip(0.5 + (label - 0.5) * skill + rng.normal(0, 0.25),
                                       0.02, 0.98)), 4)
            rows.append({"key": "%08d_%s" % (2 * p + (view == "MLO"), crop_id),
                         "crop_id": crop_id, "case_id": "P%02d_1" % p, "patient_id": "P%02d" % p,
                         "label": label, "prob_benign": round(1.0 - prob, 4),
                         "prob_malignant": prob, "pred": int(prob > 0.5)})
    return rows


def _results(run, split, name, skill, seed, val=None, external=None):
    """Write eval/<name>.json and its predictions as `deepmammo eval` lays them out."""
    entries = []
    for n, it in enumerate((25, 50, 75)):
        rows = _predictions(skill * (0.6 + 0.2 * n), seed * 10 + n)
        rel = os.path.join(name + "_predictions", "net_iter_%d.csv" % it)
        write_predictions(rows, os.path.join(run, "eval", rel))
        metrics, ci = score_rows(rows, n_boot=N_BOOT, seed=0)
        entry = {"snapshot": os.path.join(run, "net_iter_%d.caffemodel" % it), "iteration": it,
                 "fraction": None, "epoch": it / 2.5, "predictions": rel, "metrics": metrics,
                 "ci": ci, "calibration": rows_reliability(rows)}
        if split == "val":
            entry["fitted_threshold"] = {"criterion": "youden", "value": choose_threshold(
                [r["label"] for r in rows], [r["prob_malignant"] for r in rows])}
        elif val is not None:
            fit = next(e for e in val["snapshots"] if snapshot_id(e) == snapshot_id(entry))
            t_metrics, t_ci = score_rows(rows, threshold=fit["fitted_threshold"]["value"],
                                         n_boot=N_BOOT, seed=0)
            entry["threshold_metrics"] = {"threshold": fit["fitted_threshold"]["value"],
                                          "criterion": "youden", "metrics": t_metrics,
                                          "ci": t_ci}
        entries.append(entry)
    chooser = entries if split == "val" else val["snapshots"]
    chosen = select_snapshot(chooser)
    results = {"format": "deepmammo-eval/1", "split": split, "model": "deploy.prototxt",
               "lmdb": os.path.join(run, "no_lmdb"), "mean": None, "manifest": None,
               "engine": "torch", "precision": "fp32", "tta": "none", "scale": 1.0,
               "external": external, "run": {"run_dir": run},
               "bootstrap": {"unit": "patient", "n_boot": N_BOOT, "seed": 0},
               "snapshots": entries,
               "selected": {"snapshot": snapshot_id(chosen), "iteration": chosen["iteration"],
                            "criteria": ["accuracy", "recall"], "source": "val.json"},
               "provenance": {"git_commit": "abc123", "inputs": {"val_lmdb/": "0" * 40}}}
    with open(os.path.join(run, "eval", name + ".json"), "w") as f:
        json.dump(results, f, indent=1)
    return results


def _run(root, experiment, stamp, seed, skill, group=None, external=False):
    run = os.path.join(root, "runs", experiment, stamp)
    os.makedirs(os.path.join(run, "eval"))
    config = {"experiment": experiment, "seed": seed, "epochs": 30}
    if group:
        config["repeat_group"] = group
    with open(os.path.join(run, "config.yaml"), "w") as f:
        yaml.safe_dump(config, f)
    with open(os.path.join(run, "provenance.json"), "w") as f:
        json.dump({"git_commit": "abc123", "seed": seed, "repeat_group": group}, f)
    val = _results(run, "val", "val", skill, seed)
    _results(run, "test", "test", skill, seed + 100, val)
    if external:
        _results(run, "test", "external-mias", skill * 0.7, seed + 200, val,
                 {"name": "mias", "cases": os.path.join(root, "cases", "mias", "cases.csv")})


def _write_crops(root):
    path = os.path.join(root, "crops.csv")
    with open(path, "w") as f:
        f.write("crop_id,patient_id,case_id,side,view,abnormality_id,label,shape,margins\n")
        for p in range(12):
            for view in ("CC", "MLO"):
                f.write("P%02d_RIGHT_%s_1,P%02d,P%02d_1,RIGHT,%s,1,%d,OVAL,OBSCURED\n"
                        % (p, view, p, p, view, p % 2))
    return path


def _texts(out, root):
    """{relative path: text} of every text output, this machine's paths and times masked."""
    texts = {}
    for folder, _, files in os.walk(out):
        for name in files:
            if name.endswith((".png", ".pdf")):
                continue
            path = os.path.join(folder, name)
            with open(path, encoding="utf-8") as f:
                text = f.read().replace(root, "ROOT")
            text = re.sub(r'"versions": \{[^}]*\}', '"versions": "X"', text)
            text = re.sub(r'"(created|git_commit|command|host)": "[^"]*"', r'"\1": "X"', text)
            text = re.sub(r"<tr><th>(created|git_commit|command)</th><td>[^<]*</td></tr>",
                          r"<tr><th>\1</th><td>X</td></tr>", text)
            texts[os.path.relpath(path, out)] = text
    return texts


def test_report_text_is_unchanged(tmp_path):
    root = str(tmp_path)
    _run(root, "levynet", "20261201-000000-seed1", 1, 0.5, "levynet/20261201-000000")
    _run(root, "levynet", "20261201-000000-seed2", 2, 0.3, "levynet/20261201-000000")
    _run(root, "googlenet-deeper", "20261201-000000", 7, 0.6, external=True)
    out = os.path.join(root, "report")
    build_report(os.path.join(root, "runs"), out, extras=("ensembles", "fusion"),
                 crops_path=_write_crops(root), n_boot=N_BOOT,
                 compare_pairs=[("googlenet-deeper", "levynet")])
    got = _texts(out, root)
    if os.environ.get("DEEPMAMMO_UPDATE_GOLDEN"):
        for name, text in got.items():
            os.makedirs(os.path.dirname(os.path.join(GOLDEN, name)), exist_ok=True)
            with open(os.path.join(GOLDEN, name), "w", encoding="utf-8") as f:
                f.write(text)
    want = {}
    for folder, _, files in os.walk(GOLDEN):
        for name in files:
            with open(os.path.join(folder, name), encoding="utf-8") as f:
                want[os.path.relpath(os.path.join(folder, name), GOLDEN)] = f.read()
    assert sorted(got) == sorted(want)
    for name in sorted(want):
        assert got[name] == want[name], name
