"""The ImageNet weights an experiment fine-tunes from: found by name in weights_dir and checked
against configs/weights.yaml, the one registry of their sha1 and address."""
import logging
import os

from deepmammo.experiment.config import WEIGHTS_NAME, ExperimentError, configs_dir, read_yaml
from deepmammo.provenance import file_sha1

log = logging.getLogger(__name__)


def registry(folder=None):
    """{file name: {"sha1", "what", "url"}} from configs/weights.yaml."""
    entries = read_yaml(os.path.join(configs_dir(folder), WEIGHTS_NAME))
    for name, info in entries.items():
        if not isinstance(info, dict) or not isinstance(info.get("sha1"), str):
            raise ExperimentError(f"{WEIGHTS_NAME}: {name} needs a mapping with a sha1")
    return entries


def weights_message(name, weights_dir, reason, known=None):
    info = (registry() if known is None else known).get(name, {})
    lines = [f"ImageNet weights {reason}: {os.path.join(weights_dir, name)}."]
    if info:
        lines.append(f"Put {name} ({info.get('what', 'BVLC weights')}, sha1 {info['sha1']}) "
                     f"into {weights_dir}/ (BVLC publishes it at {info.get('url')}),")
    else:
        lines.append(f"Put {name} into {weights_dir}/,")
    lines.append("or name the folder that holds it with WEIGHTS_DIR=... (weights_dir=...), or "
                 "train without ImageNet weights with FROM_SCRATCH=1 (from_scratch=true); "
                 "such a run is marked FROM_SCRATCH in every output.")
    return "\n".join(lines)


def find_weights(config, check_sha1=True):
    """(path or None, from_scratch flag) for this run's initial weights.

    A net with no `weights` (LevyNet) starts from its fillers by design and is not marked.
    """
    name = config.get("weights")
    if not name:
        return None, False
    if config.get("from_scratch"):
        return None, True
    known = registry()
    weights_dir = config.get("weights_dir") or "weights"
    path = os.path.join(weights_dir, name)
    if not os.path.isfile(path):
        message = weights_message(name, weights_dir, "not found", known)
        if config.get("if_weights_missing") == "scratch":
            log.warning("%s\nGoing on FROM_SCRATCH.", message)
            return None, True
        raise ExperimentError(message)
    expected = known.get(name, {}).get("sha1")
    if check_sha1 and expected:
        actual = file_sha1(path)
        if actual != expected:
            raise ExperimentError(weights_message(
                name, weights_dir, f"have the wrong sha1 ({actual}, expected {expected})",
                known))
    return path, False


def weights_sha1(path):
    """The registry's sha1 of a weights file (None for a file it does not list)."""
    return registry().get(os.path.basename(path), {}).get("sha1") if path else None
