"""External validation: a run's snapshots scored on a dataset built from another cases table
(another archive: CBIS-DDSM, MIAS, INbreast), preprocessed as the run's own training data was.

The network only ever saw records minus its training mean, in the grey levels its dataset's
16 -> 8 bit mapping produced. A test on another archive must feed it the same: the other
dataset's own mean would quietly re-centre the images towards what the network expects, and
another grey mapping changes what a grey level means. So when `deepmammo eval` reads an LMDB
outside the run's own dataset folder it:

  - refuses a dataset whose build.json grey mapping (or record size) differs from the run's
    dataset's, naming both files and both mappings (rebuild it with the run's `--grey`);
  - takes the mean from the run (its train_val TEST layer, else its dataset's
    mean.binaryproto) and refuses a --mean file whose bytes differ from the run's;
  - marks the results `external` (dataset, cases table, the run's dataset, grey mapping, mean),
    so tables keep them apart from the run's internal test and the report shows them beside it.
"""
import json
import logging
import os

from deepmammo.provenance import file_sha1

log = logging.getLogger(__name__)


def dataset_folder(lmdb_path):
    """The dataset folder an LMDB belongs to (the LMDB folders sit in it)."""
    return os.path.dirname(os.path.abspath(lmdb_path.rstrip("/")))


def read_build(folder):
    """The build record (build.json) of a dataset folder, or None when it has none."""
    path = os.path.join(folder, "build.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        try:
            return json.load(f)
        except ValueError as exc:
            raise ValueError("%s: not JSON (%s)" % (path, exc)) from exc


def _build_config(build):
    return (build or {}).get("config") or {}


def grey_mapping(build):
    """The grey mapping a build record names ('full-range', 'window:0.5-99.5', 'od'), or None."""
    config = _build_config(build)
    return config.get("grey_spec") or (json.dumps(config["grey"], sort_keys=True)
                                       if config.get("grey") else None)


def cases_table(build):
    """The cases table the dataset's crops were cut from, as the crops stage recorded it."""
    crops = _build_config(build).get("crops_config") or {}
    return crops.get("cases")


def run_dataset(info, train_val_mean=None):
    """The folder of the dataset the run trained on: the run config's `dataset`, else the
    folder of its train_val's TEST mean file; None when neither exists here."""
    config = info.get("config") or {}
    candidates = [config.get("dataset")] if isinstance(config.get("dataset"), str) else []
    if train_val_mean:
        candidates.append(os.path.dirname(os.path.abspath(train_val_mean)))
    for folder in candidates:
        if folder and os.path.isdir(folder):
            return os.path.abspath(folder)
    return None


def external_record(lmdb_path, info, train_val_mean=None):
    """None when the LMDB is in the run's own dataset (or the run's dataset is unknown), else
    the `external` record for the results, after checking the grey mapping and record size."""
    own = run_dataset(info, train_val_mean)
    other = dataset_folder(lmdb_path)
    if own is None or os.path.realpath(own) == os.path.realpath(other):
        return None
    own_build, other_build = read_build(own), read_build(other)
    own_json, other_json = (os.path.join(own, "build.json"), os.path.join(other, "build.json"))
    if own_build is None or other_build is None:
        missing = own_json if own_build is None else other_json
        raise ValueError("%s is missing: an evaluation on another dataset (%s) needs both "
                         "datasets' build records to check they share the grey mapping"
                         % (missing, other))
    own_grey, other_grey = grey_mapping(own_build), grey_mapping(other_build)
    if own_grey != other_grey:
        raise ValueError("%s maps grey levels %s but the run trained on %s (%s, grey %s): "
                         "rebuild the external dataset with `deepmammo lmdb ... --grey %s`"
                         % (other_json, other_grey, own, own_json, own_grey, own_grey))
    own_size, other_size = _build_config(own_build).get("size"), \
        _build_config(other_build).get("size")
    if own_size != other_size:
        raise ValueError("%s holds %s px records but the run trained on %s px (%s)"
                         % (other_json, other_size, own_size, own_json))
    cases, own_cases = cases_table(other_build), cases_table(own_build)
    same_cases = cases and own_cases and \
        _build_config(other_build).get("crops_config", {}).get("cases_sha1") == \
        _build_config(own_build).get("crops_config", {}).get("cases_sha1")
    if same_cases:
        log.warning("%s was built from the same cases table as the run's dataset: its "
                    "records may include the run's training images", other)
    return {"dataset": other, "cases": cases, "run_dataset": own, "run_cases": own_cases,
            "grey": own_grey, "same_cases": bool(same_cases),
            "name": _name(cases) or os.path.basename(other)}


def _name(cases):
    """A short name of a cases table: the folder that holds cases.csv."""
    if not cases:
        return None
    return os.path.basename(os.path.dirname(os.path.abspath(cases))) or None


def run_mean(own_dataset, train_val_mean=None):
    """The mean file the run subtracted: its train_val TEST layer's, else its dataset's."""
    if train_val_mean:
        return train_val_mean
    path = os.path.join(own_dataset, "mean.binaryproto")
    return path if os.path.isfile(path) else None


def check_mean(mean_path, expected, external):
    """Refuse a mean file other than the run's for an external evaluation."""
    if not mean_path or not expected or os.path.realpath(mean_path) == \
            os.path.realpath(expected):
        return
    if not os.path.isfile(mean_path):
        raise FileNotFoundError("mean file not found: %s" % mean_path)
    if file_sha1(mean_path) != file_sha1(expected):
        raise ValueError("%s is not the run's training mean (%s): an evaluation on another "
                         "dataset (%s) subtracts the mean the run trained with; drop --mean"
                         % (mean_path, expected, external["dataset"]))


def external_mean(record, mean_path, mean_value, train_val_mean):
    """The mean for an evaluation on another dataset: the run's own (module docstring); records
    it in `record` and returns the mean file to read (None when mean_value is used)."""
    expected = run_mean(record["run_dataset"], train_val_mean)
    if mean_path is None and mean_value is None:
        if expected is None:
            raise ValueError("no training mean for the run on %s: pass --train-val with the "
                             "run's train_val.prototxt" % record["run_dataset"])
        mean_path = expected
    elif mean_path:
        check_mean(mean_path, expected, record)
    record["mean"] = os.path.abspath(mean_path) if mean_path else list(mean_value)
    log.info("external evaluation on %s (cases %s) with the run's mean %s and grey mapping %s",
             record["dataset"], record["cases"], record["mean"], record["grey"])
    return mean_path
