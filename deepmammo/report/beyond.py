"""Past the paper (its section 7): model and snapshot ensembles, CC + MLO fusion, and a t-SNE
map of the last pooled activations. Each result is reported in its own rows, never mixed into
the paper's tables."""
import csv
import logging
import os

import numpy as np

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------- ensembles

def ensemble(prediction_sets, names=None):
    """Average the malignant probabilities of several prediction sets over the same records.

    prediction_sets: lists of prediction rows (predictions CSV rows). Records are matched by key;
    the sets must hold the same records with the same labels. Decisions are the argmax of the
    averaged two-way probabilities (malignant iff the mean exceeds 0.5).
    """
    if len(prediction_sets) < 2:
        raise ValueError("an ensemble needs at least two prediction sets")
    names = names or ["set %d" % i for i in range(len(prediction_sets))]
    by_key = [{r["key"]: r for r in rows} for rows in prediction_sets]
    keys = list(by_key[0])
    for name, table in zip(names[1:], by_key[1:]):
        if set(table) != set(keys):
            raise ValueError("%s covers other records than %s (%d vs %d records, %d shared)"
                             % (name, names[0], len(table), len(keys),
                                len(set(table) & set(keys))))
    out = []
    for key in keys:
        members = [t[key] for t in by_key]
        labels = {int(m["label"]) for m in members}
        if len(labels) != 1:
            raise ValueError("record %s has different labels across the sets" % key)
        p = float(np.mean([m["prob_malignant"] for m in members]))
        row = dict(members[0])
        row.update(prob_malignant=p, prob_benign=1.0 - p, pred=int(p > 0.5))
        out.append(row)
    return out


# ------------------------------------------------------------------------------ CC + MLO

CASE_FIELDS = ("shape", "margins", "lesion_type", "assessment", "subtlety", "density")


def read_crops(path):
    """{crop_id: row} of the dataset builder's crops.csv, with the mass descriptors (shape,
    margins, ...) of cases.csv joined by case_id where crops.csv lacks them (cases.csv is found
    through crops.json, the crops build record beside it)."""
    if not os.path.isfile(path):
        raise FileNotFoundError("crops table not found: %s" % path)
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if "crop_id" not in (reader.fieldnames or ()):
            raise ValueError("%s: needs a crop_id column (has %s)" % (path, reader.fieldnames))
        crops = {row["crop_id"]: row for row in reader}
    sample = next(iter(crops.values()), {})
    if all(field in sample for field in ("shape", "margins")):
        return crops
    from deepmammo.evaluate.predict import find_named_input
    cases_path = find_named_input(os.path.join(os.path.dirname(path), "crops.json"),
                                  "cases.csv")
    if not cases_path:
        log.info("no cases.csv found for %s: no shape or margins to show", path)
        return crops
    with open(cases_path, newline="") as f:
        cases = {row["case_id"]: row for row in csv.DictReader(f) if "case_id" in row}
    for crop in crops.values():
        case = cases.get(crop.get("case_id"), {})
        for field in CASE_FIELDS:
            if not crop.get(field) and case.get(field):
                crop[field] = case[field]
    return crops


def mass_key(row, crop):
    """Which mass a crop shows: patient, breast side and abnormality number (the same mass is
    numbered alike in its CC and MLO overlays), plus the label so a mismatch never fuses."""
    return (row.get("patient_id") or crop.get("patient_id", ""), crop.get("side", ""),
            crop.get("abnormality_id", "") or "1", int(row["label"]))


def fuse_views(rows, crops):
    """Score each mass by the mean malignant probability over its views (CC and MLO).

    rows: prediction rows; crops: {crop_id: crops.csv row} with side and view. Records of one
    crop (augmented copies) are averaged first, so each view weighs the same.
    Returns (mass rows, counts) where counts says how many masses had both views.
    """
    per_crop = {}
    for row in rows:
        crop = crops.get(row.get("crop_id", ""))
        if crop is None:
            raise ValueError("record %s: crop %r is not in the crops table"
                             % (row["key"], row.get("crop_id")))
        per_crop.setdefault(row["crop_id"], []).append(row)
    masses = {}
    for crop_id, crop_rows in per_crop.items():
        crop = crops[crop_id]
        key = mass_key(crop_rows[0], crop)
        p = float(np.mean([r["prob_malignant"] for r in crop_rows]))
        masses.setdefault(key, []).append((crop.get("view", ""), p, crop_id))
    out, both = [], 0
    for key, views in masses.items():
        names = sorted({v[0] for v in views})
        has_both = {"CC", "MLO"} <= {n.upper() for n in names}
        both += has_both
        p = float(np.mean([v[1] for v in views]))
        out.append({"key": "|".join(str(k) for k in key[:3]), "patient_id": key[0],
                    "label": key[3], "prob_malignant": p, "prob_benign": 1.0 - p,
                    "pred": int(p > 0.5), "views": "+".join(names),
                    "crops": " ".join(v[2] for v in views), "both_views": has_both})
    return out, {"masses": len(out), "both_views": both, "single_view": len(out) - both,
                 "crops": len(per_crop)}


# ----------------------------------------------------------------------------------- t-SNE

def _row_affinities(dist_row, target_entropy, tol=1e-5, steps=60):
    """Gaussian conditional probabilities of one point whose entropy matches log(perplexity),
    by bisection on the precision beta."""
    beta, lo, hi = 1.0, 0.0, np.inf
    for _ in range(steps):
        p = np.exp(-(dist_row - dist_row.min()) * beta)
        s = p.sum()
        entropy = np.log(s) + beta * np.sum((dist_row - dist_row.min()) * p) / s
        if abs(entropy - target_entropy) < tol:
            break
        if entropy > target_entropy:
            lo = beta
            beta = beta * 2 if hi == np.inf else (beta + hi) / 2
        else:
            hi = beta
            beta = (beta + lo) / 2
    return p / s


def tsne(features, perplexity=30.0, iterations=750, seed=0, pca_dims=50):
    """Exact t-SNE (van der Maaten & Hinton 2008) to 2-D, for a few hundred points.

    PCA to `pca_dims` first; perplexity is capped at (n - 1) / 3; early exaggeration 12 for the
    first 250 iterations; momentum 0.5 then 0.8 with per-coordinate gains. Deterministic per seed.
    """
    x = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
    n = x.shape[0]
    if n < 5:
        raise ValueError("t-SNE needs at least 5 points, got %d" % n)
    x = x - x.mean(axis=0)
    if x.shape[1] > pca_dims:
        _, _, vt = np.linalg.svd(x, full_matrices=False)
        x = x @ vt[:pca_dims].T
    scale = np.abs(x).max()
    x = x / scale if scale > 0 else x
    sq = np.sum(x * x, axis=1)
    dist = np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0)
    perplexity = min(perplexity, (n - 1) / 3.0)
    target = np.log(perplexity)
    p = np.zeros((n, n))
    for i in range(n):
        others = np.r_[0:i, i + 1:n]
        p[i, others] = _row_affinities(dist[i, others], target)
    p = (p + p.T) / (2.0 * n)
    p = np.maximum(p, 1e-12)
    rng = np.random.default_rng(seed)
    y = rng.normal(0, 1e-4, size=(n, 2))
    velocity = np.zeros_like(y)
    gains = np.ones_like(y)
    learning_rate = max(n / 12.0 / 4.0, 50.0)
    for it in range(iterations):
        exaggeration = 12.0 if it < 250 else 1.0
        momentum = 0.5 if it < 250 else 0.8
        sy = np.sum(y * y, axis=1)
        num = 1.0 / (1.0 + sy[:, None] + sy[None, :] - 2 * y @ y.T)
        np.fill_diagonal(num, 0.0)
        q = np.maximum(num / num.sum(), 1e-12)
        w = (exaggeration * p - q) * num
        grad = 4.0 * ((np.diag(w.sum(axis=1)) - w) @ y)
        same = np.sign(grad) == np.sign(velocity)
        gains = np.where(same, gains * 0.8, gains + 0.2).clip(0.01)
        velocity = momentum * velocity - learning_rate * gains * grad
        y = y + velocity
        y = y - y.mean(axis=0)
    return y


def last_pool_blob(model_path):
    """(layer name, top blob) of the deploy net's last Pooling layer."""
    from deepmammo.caffe.formats.prototxt import read_net
    pools = [l for l in read_net(model_path).layer if l.type == "Pooling"]
    if not pools:
        raise ValueError("%s has no Pooling layer to take activations from" % model_path)
    return pools[-1].name, pools[-1].top[0]


def pooled_activations(net, images, blob, mean=None, scale=1.0, batch_size=32):
    """(N, D) activations of `blob` for raw records, preprocessed as at TEST."""
    from deepmammo.evaluate.predict import preprocess
    crop = tuple(net.blobs["data"].data.shape[2:4])
    feats = []
    for start in range(0, len(images), batch_size):
        batch = np.stack([preprocess(im, crop, mean, scale)
                          for im in images[start:start + batch_size]])
        if tuple(net.blobs["data"].data.shape) != batch.shape:
            net.blobs["data"].reshape(*batch.shape)
            net.reshape()
        net.blobs["data"].data[...] = batch
        net.forward()
        feats.append(np.array(net.blobs[blob].data, dtype=np.float32).reshape(len(batch), -1))
    return np.concatenate(feats)
