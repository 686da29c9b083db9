"""A model card for a trained run (Mitchell et al., "Model Cards for Model Reporting"), written
from the run's own records only: config.yaml and provenance.json (training), eval/val.json and
eval/test.json (metrics, intervals, calibration, the chosen snapshot and threshold), the
dataset's build.json and split record, and the cases table's ingest report (the archive).

`card_facts(run)` gathers the figures (model-card.json); `render(facts)` writes them as
Markdown (model-card.md). `deepmammo experiment --evaluate` writes both into the run folder,
`deepmammo export` beside every exported file, and the HTML report shows each run's card.
"""
import json
import os

from deepmammo.evaluate import runinfo
from deepmammo.evaluate.records import Results
from deepmammo.report.origin import dataset_origin
from deepmammo.report.table import Table

FORMAT = "deepmammo-model-card/1"
SPLITS = ("train", "val", "test")
METRICS = ("accuracy", "precision", "recall", "specificity", "f1", "roc_auc", "pr_auc")
NOT_FOR = (
    "This is a research reproduction of a published method (Jain & Levy, DeepMammo), trained "
    "and evaluated on the data named above. It is not a medical device: it has not been "
    "validated clinically, on any population, scanner or film other than its own data, and "
    "its outputs must not inform the diagnosis or care of any person. Its inputs are film "
    "crops around a mass already found and outlined by a reader; it does not find masses.")


def _json(path):
    if not path or not os.path.isfile(path):
        return None
    with open(path) as f:
        try:
            return json.load(f)
        except ValueError:
            return None


def _results(path):
    """The Results record of an eval results file, or None when there is none to read."""
    data = _json(path)
    return Results(data, path) if isinstance(data, dict) else None


def _scored(entry):
    """metrics and intervals of one evaluated snapshot, at argmax and (test) at the
    validation threshold."""
    if entry is None:
        return None
    out = {"n": entry.metrics.get("n"), "at_argmax": {
        m: {"value": entry.metrics.get(m), "ci95": entry.ci.get(m)} for m in METRICS}}
    tm = entry.threshold_metrics
    if tm:
        out["at_validation_threshold"] = {
            "threshold": tm["threshold"],
            **{m: {"value": tm["metrics"].get(m), "ci95": (tm.get("ci") or {}).get(m)}
               for m in METRICS}}
    cal = entry.calibration or {}
    out["calibration"] = {"ece": cal.get("ece"), "mce": cal.get("mce"),
                          "n_bins": cal.get("n_bins")}
    return out


def card_facts(run, snapshot=None):
    """The model card's figures of a run folder (a dict, JSON-ready)."""
    from deepmammo.evaluate.runinfo import resolve_recorded
    run_dir = os.path.realpath(os.fspath(run))
    info = runinfo.run_info(run_dir)
    config = info.get("config") or {}
    prov = info.get("provenance") or {}
    val = _results(os.path.join(run_dir, "eval", "val.json"))
    test = _results(os.path.join(run_dir, "eval", "test.json"))
    selected = (test or val).selected if (test or val) else {}
    name = os.path.basename(snapshot) if snapshot else selected.get("snapshot")
    if not name:
        found = sorted((f for f in os.listdir(run_dir) if runinfo.snapshot_iteration(f)
                        is not None and f.endswith(".caffemodel")),
                       key=runinfo.snapshot_iteration)
        name = found[-1] if found else None
    val_entry = val.entry(name) if val else None
    test_entry = test.entry(name) if test else None
    dataset = resolve_recorded(config.get("dataset"), run_dir) \
        if isinstance(config.get("dataset"), str) else None
    build = _json(os.path.join(dataset, "build.json")) if dataset else None
    bconfig = (build or {}).get("config") or {}
    splits_json = None
    if bconfig.get("splits"):
        splits_json = _json(os.path.splitext(bconfig["splits"])[0] + ".json")
    origin = dataset_origin(dataset) if dataset else {}
    solver = prov.get("solver") or {}
    training = prov.get("training") or {}
    iteration = runinfo.snapshot_iteration(name) if name else None
    _, epoch = runinfo.training_progress(iteration, info)
    return {
        "format": FORMAT,
        "model": {
            "experiment": info.get("experiment"), "description": config.get("description"),
            "run": run_dir, "net": _net_name(os.path.join(run_dir, "deploy.prototxt")),
            "deploy": os.path.join(run_dir, "deploy.prototxt"),
            "snapshot": name, "iteration": iteration, "epoch": epoch,
            "snapshot_choice": ("given" if snapshot else
                                "chosen on validation by " + ", ".join(selected["criteria"])
                                if selected.get("criteria") else "the last snapshot"),
            "threshold": val_entry.fitted_threshold if val_entry else None,
            "classes": ["benign", "malignant"],
        },
        "data": {
            "archive": origin.get("archive"), "source": origin.get("source"),
            "synthetic": origin.get("synthetic"), "cases": origin.get("cases"),
            "ingested": origin.get("ingest_counts"), "dataset": dataset,
            "padding": (bconfig.get("crops_config") or {}).get("padding") or
            config.get("padding"),
            "grey": bconfig.get("grey_spec"), "record_size": bconfig.get("size"),
            "eval_resize": bconfig.get("eval_resize"),
            "augment": bconfig.get("augment") or config.get("augment"),
            "split": {"file": bconfig.get("splits"),
                      "mode": ((splits_json or {}).get("config") or {}).get("mode"),
                      "seed": ((splits_json or {}).get("config") or {}).get("seed"),
                      "unit": "patient" if ((splits_json or {}).get("config") or {})
                      .get("mode") == "paper" else "image"},
            "data_seed": (build or {}).get("seed"),
            "counts": {s: {k: c.get(k) for k in ("crops", "records", "benign_crops",
                                                 "malignant_crops", "patients")}
                       for s, c in sorted(((build or {}).get("counts") or {}).items(),
                                          key=lambda item: SPLITS.index(item[0])
                                          if item[0] in SPLITS else 9)},
        },
        "training": {
            "net": os.path.basename(os.path.dirname(config.get("deploy") or "")) or None,
            "solver": {k: solver.get(k) for k in ("type", "base_lr", "lr_policy", "max_iter",
                                                  "stepsize", "weight_decay", "random_seed")},
            "solver_file": config.get("solver"),
            "batch_size": (prov.get("resolution") or {}).get("train_batch"),
            "seed": info.get("seed"), "data_seed": info.get("data_seed"),
            "repeat_group": info.get("repeat_group"),
            "epochs": config.get("epochs") or runinfo.training_progress(
                info.get("max_iter"), info)[1],
            "engine": training.get("engine") or config.get("engine"),
            "device": training.get("device") or config.get("device"),
            "precision": training.get("precision") or config.get("precision"),
            "weights": (prov.get("weights") or {}).get("path"),
            "from_scratch": prov.get("from_scratch"),
            "seconds": training.get("seconds"),
        },
        "validation": _scored(val_entry),
        "test": _scored(test_entry),
        "not_for": NOT_FOR,
    }


def _net_name(deploy):
    try:
        with open(deploy) as f:
            for line in f:
                if line.strip().startswith("name:"):
                    return line.split(":", 1)[1].strip().strip('"')
    except OSError:
        pass
    return None


def _fmt(value, digits=3):
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}" if digits == "g" else f"{value:.{digits}f}"
    return str(value)


def _metric_table(scored, key, value_heading):
    """The metrics of one block (at argmax, at the validation threshold) as Markdown lines."""
    table = Table(columns=("metric", value_heading, "95% CI"))
    for m in METRICS:
        v = scored[key].get(m) or {}
        ci = v.get("ci95")
        table.add(m, _fmt(v.get("value")), "%s - %s" % (_fmt(ci[0]), _fmt(ci[1])) if ci else "-")
    return table.markdown().splitlines()


def render(facts):
    """The card as Markdown."""
    m, d, t = facts["model"], facts["data"], facts["training"]
    synthetic = d.get("synthetic")
    title = f"Model card: {m['experiment']} ({m['net']})"
    if synthetic:
        title += " (SYNTHETIC DATA)"
    lines = [f"# {title}", ""]
    if synthetic:
        lines += ["**Trained and evaluated on a synthetic archive written by `deepmammo synth`: "
                  "its figures say the pipeline works, nothing about mammograms.**", ""]
    thr = m.get("threshold") or {}
    lines += [
        "## Model",
        f"- net: {m['net']} ({m['deploy']}); classes: benign (0), malignant (1)",
        f"- snapshot: {m['snapshot']} (iteration {_fmt(m['iteration'])}, epoch "
        f"{_fmt(m['epoch'], 2)}), {m['snapshot_choice']}",
        f"- decision threshold on p(malignant): {_fmt(thr.get('value'), 4)} "
        f"({thr.get('criterion', 'argmax')}, fitted on validation)" if thr else
        "- decision: argmax (no validation threshold)",
        f"- run: {m['run']}", "",
        "## Data",
        f"- archive: {d['archive'] or 'unknown'} (source {d['source'] or 'unknown'}"
        f"{', synthetic' if synthetic else ''}); cases table {d['cases'] or 'unknown'}",
        f"- dataset: {d['dataset']}: crops padded {d['padding']}, grey mapping {d['grey']}, "
        f"{d['record_size']} px records ({d['eval_resize']} at val/test), training "
        f"augmentation {d['augment']}",
        f"- split: {d['split']['mode']} (by {d['split']['unit']}), seed {d['split']['seed']} "
        f"({d['split']['file']})",
    ]
    for split, c in d["counts"].items():
        lines.append(f"- {split}: {c['crops']} masses ({c['benign_crops']} benign, "
                     f"{c['malignant_crops']} malignant) from {c['patients']} patients, "
                     f"{c['records']} records")
    s = t["solver"]
    lines += [
        "", "## Training",
        f"- net {t['net']}, solver {t['solver_file']}: {s['type']}, base_lr "
        f"{_fmt(s['base_lr'], 'g')}, "
        f"{s['lr_policy']} policy, {s['max_iter']} iterations at batch {t['batch_size']} "
        f"({_fmt(t['epochs'], 2)} epochs)",
        f"- seeds: training {t['seed']}, data {d['data_seed']}"
        + (f" (repeat group {t['repeat_group']})" if t["repeat_group"] else ""),
        f"- engine {t['engine']} on {t['device']}, precision {t['precision']}; initial weights "
        f"{t['weights'] or 'none (from the fillers)'}; {_fmt(t['seconds'], 1)} s", ""]
    for split in ("validation", "test"):
        scored = facts.get(split)
        if not scored:
            lines += [f"## {split.capitalize()}: not evaluated", ""]
            continue
        lines += [f"## {split.capitalize()} ({scored['n']} records; 95% patient-bootstrap "
                  "intervals)", ""]
        lines += _metric_table(scored, "at_argmax", "at argmax")
        if scored.get("at_validation_threshold"):
            at = scored["at_validation_threshold"]
            lines += ["", f"At the validation threshold {_fmt(at['threshold'], 4)}:", ""]
            lines += _metric_table(scored, "at_validation_threshold", "value")
        cal = scored["calibration"]
        lines += ["", f"Calibration of p(malignant): ECE {_fmt(cal['ece'])}, MCE "
                  f"{_fmt(cal['mce'])} ({cal['n_bins']} bins)", ""]
    lines += ["## Not for", "", facts["not_for"], ""]
    return "\n".join(lines)


def write_card(run, folder=None, stem="model-card", snapshot=None):
    """model-card.md and model-card.json into `folder` (default: the run folder)."""
    from deepmammo.atomic import write_text
    facts = card_facts(run, snapshot)
    folder = folder or facts["model"]["run"]
    md = os.path.join(folder, stem + ".md")
    write_text(md, render(facts))
    write_text(os.path.join(folder, stem + ".json"), json.dumps(facts, indent=1) + "\n")
    return md, facts
