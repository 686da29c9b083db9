import subprocess
import sys

import pytest

from deepmammo.cli import build_parser


@pytest.mark.subprocess
def test_python_m_deepmammo_prints_help():
    out = subprocess.run([sys.executable, "-m", "deepmammo", "--help"], capture_output=True,
                         text=True, check=True).stdout
    assert "deepmammo" in out


def test_parser_builds_with_every_stage():
    parser = build_parser()
    assert parser.prog == "deepmammo"
