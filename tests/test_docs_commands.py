"""Every command the README and docs/ show is walked: each `deepmammo ...` line of their code
blocks parses with the real command line (subcommand, options, choices, required arguments),
each `make ...` line names targets the Makefile has and variables it reads, and every dataset
folder a command names is one a target builds. (test_classify.py runs the README's "Using a
trained run" block as written.)"""
import glob
import os
import re
import shlex
import subprocess

import pytest
from helpers import ROOT

from deepmammo.cli import build_parser
from deepmammo.experiment import experiment_names, load_config, variant_name

DOCS = [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
STARTS = ("deepmammo ", "make ", "python -m deepmammo ", ".venv/bin/python -m deepmammo ")


def code_lines(path):
    """(line number, text) of the command lines in a Markdown file's code blocks (fenced, or
    indented by four spaces), continuation lines joined; plus the block's shell variables."""
    out, fenced, block_vars = [], False, {}
    pending, start = "", 0
    lines = open(path, encoding="utf-8").read().splitlines()
    for i, raw in enumerate(lines, 1):
        stripped = raw.strip()
        if stripped.startswith("```"):
            fenced = not fenced
            block_vars = {}
            continue
        in_code = fenced or (raw.startswith("    ") and not stripped.startswith(("-", "*")))
        if not in_code:
            if not stripped:
                block_vars = {} if not fenced else block_vars
            continue
        if pending:
            pending += " " + stripped
        else:
            pending, start = stripped, i
        if pending.endswith("\\"):
            pending = pending[:-1]
            continue
        text, pending = pending, ""
        m = re.match(r"^([A-Z_]+)=(\S+)$", text)
        if m:
            block_vars[m.group(1)] = m.group(2)
            continue
        if text.startswith("$ "):
            text = text[2:]
        if text.startswith(STARTS) and not re.match(r"^deepmammo [a-z-]+:", text):
            out.append((start, text, dict(block_vars)))
    return out


def commands():
    """One parameter per documented command line; a line that runs make is checked against
    `make -p`'s database (a subprocess, so marked)."""
    found = []
    for path in DOCS:
        for line, text, variables in code_lines(path):
            runs_make = any(argv[0] == "make" for argv in _words(text, variables))
            found.append(pytest.param(text, variables, id=f"{os.path.basename(path)}:{line}",
                                      marks=[pytest.mark.subprocess] if runs_make else []))
    return found


def _words(text, variables):
    for name, value in variables.items():
        text = text.replace("$" + name, value)
    words = shlex.split(text, comments=True)
    # a chain (&&, ;, |) is walked command by command
    chain, current = [], []
    for w in words:
        if w in ("&&", ";", "|", "||"):
            chain.append(current)
            current = []
        else:
            current.append(w)
    chain.append(current)
    return [c for c in chain if c]


def _make_database():
    proc = subprocess.run(["make", "-pRrq", "-f", os.path.join(ROOT, "Makefile"), "help"],
                          cwd=ROOT, capture_output=True, text=True)
    targets = set(re.findall(r"^([a-z0-9][a-z0-9 -]*?):(?!=)", proc.stdout, re.M))
    names = set()
    for t in targets:
        names.update(t.split())
    return names | set(experiment_names(os.path.join(ROOT, "configs")))


MAKE_TARGETS = None
MAKEFILE = open(os.path.join(ROOT, "Makefile")).read()


def _built_variants():
    """Dataset variants some target builds: each experiment's, and the data-* targets'."""
    variants = {"fixed50-none", "proportional2-none", "proportional2-paper",
                "proportional2-code"}
    for name in experiment_names(os.path.join(ROOT, "configs")):
        variants.add(variant_name(load_config(os.path.join(ROOT, "configs", name + ".yaml"),
                                              environ={})))
    return variants


def check_dataset_paths(words):
    for w in words:
        for m in re.finditer(r"data/datasets/[^/\s]+/seed\d+/([^/\s]+)", w):
            if m.group(1) != "crops":
                assert m.group(1) in _built_variants(), \
                    f"{w}: no target builds a dataset variant {m.group(1)!r}"


def check_deepmammo(argv):
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
    except SystemExit as exc:
        raise AssertionError(f"deepmammo {' '.join(argv)}: does not parse") from exc
    if extra:
        assert hasattr(args, "overrides") and all("=" in e for e in extra), \
            f"deepmammo {' '.join(argv)}: unrecognized arguments {extra}"
    assert getattr(args, "func", None), f"deepmammo {' '.join(argv)}: no subcommand"


def check_make(argv, created):
    global MAKE_TARGETS
    if MAKE_TARGETS is None:
        MAKE_TARGETS = _make_database()
    for w in argv:
        if w.startswith("-"):
            continue
        if "=" in w:
            var = w.split("=", 1)[0]
            assert re.search(r"\$[({]%s[)}]|^%s\s*[?:]?=" % (var, var), MAKEFILE, re.M), \
                f"make {' '.join(argv)}: the Makefile does not read {var}"
        else:
            assert w in MAKE_TARGETS or w in created, f"make {' '.join(argv)}: no target {w!r}"


@pytest.mark.parametrize("text,variables", commands())
def test_every_documented_command_is_one_that_runs(text, variables):
    created = set(re.findall(r"configs/([a-z0-9-]+)\.yaml", text))
    for argv in _words(text, variables):
        check_dataset_paths(argv)
        if argv[0] == "make":
            check_make(argv[1:], created | {"mine"})
        elif argv[0] == "deepmammo":
            check_deepmammo(argv[1:])
        elif argv[:3] in (["python", "-m", "deepmammo"], [".venv/bin/python", "-m", "deepmammo"]):
            check_deepmammo(argv[3:])


def test_the_walk_finds_the_commands():
    found = [p.values[0] for p in commands()]
    assert len(found) > 30
    assert any(c.startswith("make paper CASES=") for c in found)
    assert any(c.startswith("deepmammo classify") for c in found)
    assert any("make external" in c for c in found)


@pytest.mark.subprocess
def test_make_paper_without_an_archive_stops_at_the_first_step_of_reproducing_the_paper():
    from helpers import env
    for goal in ("paper", "levynet"):
        proc = subprocess.run(["make", goal], cwd=ROOT, capture_output=True, text=True,
                              env=env())
        assert proc.returncode == 2, proc
        out = proc.stdout + proc.stderr
        assert "no archive named" in out and "Reproducing the paper" in out
        lines = out.splitlines()
        # the first step, one command a line, as the README shows it
        assert any(line.strip().startswith("deepmammo ingest ddsm PATH/TO/DDSM --out")
                   for line in lines)
        assert any(line.strip().startswith("deepmammo ingest cbis") for line in lines)
        assert not os.path.exists(os.path.join(ROOT, "data", "synth", "ddsm-60-s0", ".done")) \
            or goal != "paper"   # nothing was built for it
    # the demo keeps its synthetic archive; a named archive passes
    assert subprocess.run(["make", "-n", "demo"], cwd=ROOT, capture_output=True,
                          env=env()).returncode == 0
    proc = subprocess.run(["make", "-n", "levynet", "DATASETS=/nowhere"], cwd=ROOT,
                          capture_output=True, text=True, env=env())
    assert "no archive named" not in proc.stdout + proc.stderr


@pytest.mark.subprocess
def test_a_message_of_several_lines_prints_as_lines(tmp_path):
    import numpy as np
    from helpers import dm
    from worlds import make_workspace

    from deepmammo.caffe.formats.binaryproto import write_mean
    from deepmammo.caffe.formats.datum import array_to_datum, datum_to_bytes
    from deepmammo.caffe.formats.lmdb_io import LMDBWriter, lmdb_key
    ws = make_workspace(str(tmp_path / "ws"))
    (tmp_path / "ds").mkdir()
    for split in ("train", "val", "test"):
        with LMDBWriter(str(tmp_path / "ds" / f"{split}_lmdb")) as db:
            for i in range(4):
                db.put(lmdb_key(i, f"r{i}"), datum_to_bytes(
                    array_to_datum(np.zeros((3, 224, 224), np.uint8), i % 2)))
    write_mean(np.zeros((3, 224, 224), np.float32), str(tmp_path / "ds" / "mean.binaryproto"))
    proc = dm("experiment", "configs/alexnet-noaug-large.yaml", f"dataset={tmp_path / 'ds'}",
              f"weights_dir={tmp_path / 'nowhere'}", "--dry-run", cwd=ws, check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines[0].startswith("deepmammo experiment: error: ImageNet weights not found")
    assert lines[1].startswith("  Put bvlc_alexnet.caffemodel")
    assert lines[2].startswith("  or name the folder")
    assert "; Put" not in proc.stderr


@pytest.mark.subprocess
def test_make_classify_and_export_pass_run_and_input_on(tmp_path):
    from helpers import env
    from worlds import make_workspace
    ws = make_workspace(str(tmp_path / "ws"))
    out = subprocess.run(["make", "-n", "classify", "RUN=runs/x/latest", "INPUT=cases.csv",
                          "CLASSIFY_ARGS=--oversample", "OUT=p.csv"], cwd=ws,
                         capture_output=True, text=True, env=env()).stdout
    assert "-m deepmammo classify runs/x/latest cases.csv" in out
    assert "--out p.csv --oversample" in out
    out = subprocess.run(["make", "-n", "export", "RUN=runs/x/latest"], cwd=ws,
                         capture_output=True, text=True, env=env()).stdout
    assert "-m deepmammo export runs/x/latest" in out
    proc = subprocess.run(["make", "classify"], cwd=ws, capture_output=True, text=True,
                          env=env())
    assert proc.returncode == 2 and "usage: make classify RUN=" in proc.stdout
