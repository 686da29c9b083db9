"""The long fuzz campaign (`make fuzz`): every reader of fuzz_targets.py (beside it) gets N mutants
of its seed, each read in a worker process watched from outside, so that a signal (a crash in
a C library) or a hang is counted as well as a traceback. Prints, per reader, the mutants
tried and their outcomes; exits non-zero when any reader shows a traceback, a signal, a hang
or silent garbage.

    python scripts/fuzz_campaign.py [--mutants 1000] [--seed 0] [--timeout 20] [READER ...]
"""
import argparse
import collections
import json
import os
import queue
import random
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

import fuzz_targets as T  # noqa: E402  (beside this script; deepmammo from ROOT, above)

# ok: read; error: a documented error; changed: an LJPEG flip or insertion that is a valid
# stream of other pixels (no checksum in the format can tell); the last four are failures.
OUTCOMES = ("ok", "error", "changed", "traceback", "signal", "hang", "garbage")


def _chooser(rng):
    return lambda what, n: rng.randrange(n)


def worker(reader, seed_dir, seed_path, seed, first, count):
    """Read mutants first..first+count-1 of `reader`; one JSON line per mutant on stdout,
    a "start" line before each so the parent knows which one a crash or hang hit."""
    with open(seed_path, "rb") as f:
        data = f.read()
    for i in range(first, first + count):
        kind, mutant = T.mutate(data, _chooser(random.Random(f"{seed}:{reader}:{i}")))
        print(json.dumps({"start": i, "kind": kind}), flush=True)
        try:
            outcome = T.feed(reader, seed_path, mutant, seed_dir)
            if reader == "ljpeg" and outcome == "ok":
                outcome = T.ljpeg_outcome(kind, mutant, seed_dir) or outcome
            detail = ""
        except Exception as exc:  # noqa: BLE001  (what the campaign is looking for)
            outcome, detail = "traceback", f"{type(exc).__name__}: {exc}"[:300]
        print(json.dumps({"done": i, "kind": kind, "outcome": outcome, "detail": detail}),
              flush=True)


def _pump(stream, lines):
    for line in stream:
        lines.put(line)
    lines.put(None)


def campaign(reader, seed_dir, seed_path, seed, mutants, timeout):
    counts, examples, i = collections.Counter(), [], 0
    while i < mutants:
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", reader, seed_dir,
               seed_path, str(seed), str(i), str(mutants - i)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                text=True, cwd=ROOT)
        lines = queue.Queue()
        reader_thread = threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True)
        reader_thread.start()
        current, hung = None, False
        while True:
            try:
                line = lines.get(timeout=timeout)
            except queue.Empty:          # no word from the worker: it hangs
                hung = True
                proc.kill()
                proc.wait()
                break
            if line is None:             # the worker ended (done, or killed by a signal)
                proc.wait()
                break
            msg = json.loads(line)
            if "start" in msg:
                current = msg
                continue
            counts[msg["outcome"]] += 1
            if msg["outcome"] in ("traceback", "garbage") and len(examples) < 3:
                examples.append(f"mutant {msg['done']} ({msg['kind']}): {msg['outcome']} "
                                f"{msg['detail']}")
            current = None
            i = msg["done"] + 1
        if hung and current is not None:
            counts["hang"] += 1
            examples.append(f"mutant {current['start']} ({current['kind']}): no answer in "
                            f"{timeout} s")
            i = current["start"] + 1
        elif proc.returncode < 0 and current is not None:
            counts["signal"] += 1
            examples.append(f"mutant {current['start']} ({current['kind']}): signal "
                            f"{-proc.returncode}")
            i = current["start"] + 1
        elif proc.returncode != 0 and i < mutants:
            raise SystemExit(f"{reader}: worker failed outside a mutant (exit "
                             f"{proc.returncode})")
    return counts, examples


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        reader, seed_dir, seed_path, seed, first, count = sys.argv[2:8]
        os.chdir(ROOT)   # the config reader resolves the repository's files from here
        worker(reader, seed_dir, seed_path, seed, int(first), int(count))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("readers", nargs="*", help=f"default: all ({', '.join(T.READERS)})")
    parser.add_argument("--mutants", type=int, default=1000, help="per reader (default 1000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=20.0,
                        help="seconds without an answer that count as a hang (default 20)")
    args = parser.parse_args()
    readers = args.readers or list(T.READERS)
    unknown = sorted(set(readers) - set(T.READERS))
    if unknown:
        parser.error(f"unknown reader(s) {', '.join(unknown)}")
    bad = 0
    with tempfile.TemporaryDirectory(prefix="deepmammo-fuzz-") as root:
        print(f"{'reader':<12} {'mutants':>7} " + " ".join(f"{o:>9}" for o in OUTCOMES)
              + "  seconds")
        for reader in readers:
            seed_dir = os.path.join(root, reader)
            seed_path = T.write_seeds(seed_dir)[reader]
            t0 = time.time()
            counts, examples = campaign(reader, seed_dir, seed_path, args.seed, args.mutants,
                                        args.timeout)
            total = sum(counts.values())
            print(f"{reader:<12} {total:>7} " + " ".join(f"{counts[o]:>9}" for o in OUTCOMES)
                  + f"  {time.time() - t0:7.1f}", flush=True)
            for line in examples:
                print(f"    {line}")
            bad += sum(counts[o] for o in ("traceback", "signal", "hang", "garbage"))
    print("no traceback, signal, hang or silent garbage" if not bad else
          f"{bad} mutant(s) with a traceback, signal, hang or silent garbage")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
