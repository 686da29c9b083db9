"""`deepmammo --help` lists every stage's command with its one-line description, and each
command answers its own `--help` with a usage line naming it."""
import re

import pytest
from helpers import run_cli

from deepmammo.cli import build_parser, main

# What `deepmammo --help` offers, stage by stage (the README and docs/ walk through them).
COMMANDS = (
    # sources
    "ingest", "synth",
    # the dataset
    "crops", "split", "lmdb",
    # Caffe's tools and pycaffe
    "train", "test", "pycaffe", "draw", "upgrade-net", "upgrade-net-binary", "upgrade-solver",
    "compute-mean", "convert-imageset", "extract-features", "device-query", "time",
    "parse-log",
    # experiments and their evaluation
    "experiment", "experiments", "eval",
    # a trained run, put to use
    "classify", "export", "model-card",
    # tables, figures, the report
    "tables", "figures", "report", "compare",
)


def listed_commands(help_text):
    """{command: description} of the COMMAND section of a `--help` text (argparse puts a
    long name's description on the next line)."""
    section = help_text.split("positional arguments:")[1].split("options:")[0]
    listed, name = {}, None
    for line in section.splitlines():
        m = re.match(r"^    (\S+)(?:\s{2,}(\S.*))?$", line)
        if m:
            name = m.group(1)
            listed[name] = m.group(2) or ""
        elif name and line.startswith(" " * 6) and line.strip():
            listed[name] = (listed[name] + " " + line.strip()).strip()
    return listed


@pytest.mark.subprocess
def test_python_m_deepmammo_prints_help():
    proc = run_cli("--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: deepmammo [-h] [-v] COMMAND ...")
    listed = listed_commands(proc.stdout)
    assert set(COMMANDS) <= set(listed), sorted(set(COMMANDS) - set(listed))
    assert all(listed.values()), [c for c, text in listed.items() if not text]


def test_parser_builds_with_every_stage():
    listed = listed_commands(build_parser().format_help())
    assert set(COMMANDS) <= set(listed), sorted(set(COMMANDS) - set(listed))
    assert listed["ingest"].startswith("read an archive")
    assert "caffe train" in listed["train"] and "caffe test" in listed["test"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_answers_its_own_help(command, capsys):
    try:
        status = main([command, "--help"])
    except SystemExit as exc:    # argparse's own --help
        status = exc.code
    assert status == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: deepmammo {command} ")
