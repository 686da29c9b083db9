"""Every reader, fed mutations of a real seed file (byte flips, truncation, insertions, huge and
negative numbers, non-UTF-8 bytes, empty files), returns or raises one of its documented
errors (ValueError or OSError, naming the file): never another exception. A folder in place
of the file is an error too. Hypothesis runs derandomized with a small budget here (about a
minute for all readers); `make fuzz` (scripts/fuzz_campaign.py) runs a long campaign."""
import os

import pytest
from helpers import load_script
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# The readers, their seeds and the mutations, shared with the long campaign.
T = load_script("fuzz_targets")

# Examples per reader in the test suite; DEEPMAMMO_FUZZ_EXAMPLES raises it for a longer run.
EXAMPLES = int(os.environ.get("DEEPMAMMO_FUZZ_EXAMPLES", "200"))
# The slower readers (a whole ingest, an LMDB per mutant) get a share of that.
SLOW = {"manifest": 0.3, "lmdb-record": 0.5, "config": 0.5}

settings.register_profile(
    "deepmammo-ci", derandomize=True, deadline=None, database=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("fuzz-seeds"))
    return root, T.write_seeds(root)


@pytest.mark.parametrize("reader", list(T.READERS))
def test_the_seed_itself_reads(seeds, reader):
    root, paths = seeds
    with open(paths[reader], "rb") as f:
        assert T.feed(reader, paths[reader], f.read(), root) == "ok"


@pytest.mark.parametrize("reader", list(T.READERS))
def test_mutants_raise_only_documented_errors(seeds, reader):
    root, paths = seeds
    with open(paths[reader], "rb") as f:
        seed = f.read()

    @settings(settings.get_profile("deepmammo-ci"),
              max_examples=max(1, int(EXAMPLES * SLOW.get(reader, 1.0))))
    @given(st.data())
    def check(data):
        kind, mutant = T.mutate(seed, lambda what, n: data.draw(
            st.integers(0, n - 1), label=what))
        outcome = T.feed(reader, paths[reader], mutant, root)  # undocumented errors propagate
        if reader == "ljpeg" and outcome == "ok":
            assert T.ljpeg_outcome(kind, mutant, root) != "garbage", kind

    check()


@pytest.mark.parametrize("reader", list(T.READERS))
def test_a_folder_in_place_of_the_file(seeds, reader, tmp_path):
    folder = tmp_path / ("case-1.ics" if reader == "ics" else "input")
    folder.mkdir()
    with pytest.raises(T.DOCUMENTED) as info:
        T.READERS[reader](str(folder))
    assert str(folder) in str(info.value) or str(folder) == getattr(info.value, "filename", "")
