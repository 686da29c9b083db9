"""Source-stage benchmark: full-size DDSM decode time per predictor and ingest rate.

    python -m deepmammo.sources.benchmark [--out bench.json] [--patients 40]

Decode: a synthetic 4696x3024 12-bit mammogram, PVRG-encoded with each predictor, decoded by
read_ljpeg (best of 3). Ingest: a synthetic DDSM archive of small images (cases/s with the
default header check, and with --decode-check)."""
import argparse
import json
import os
import tempfile
import time

import numpy as np

from deepmammo.sources import ddsm, ljpeg

FULL = (4696, 3024)


def full_size_image(seed=0, shape=FULL, bits=12):
    from deepmammo.sources import synth_render as render
    rng = np.random.default_rng(seed)
    image, _ = render.breast_background(rng, shape[0], shape[1], "LEFT", "CC", shape[0] / 600)
    return render.to_bits(image, bits, rng)


def bench_decode(predictors=(1, 2, 3, 6, 7), bits=12, repeats=3, workdir=None, shape=FULL):
    image = full_size_image(shape=shape, bits=bits)
    out = {}
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        for k in predictors:
            path = os.path.join(tmp, f"X.LEFT_CC.k{k}.LJPEG")
            t0 = time.perf_counter()
            ddsm.write_ljpeg(path, image, predictor=k, bits=bits)
            encode_s = time.perf_counter() - t0
            times, cpu = [], []
            for _ in range(repeats):
                t0, c0 = time.perf_counter(), time.process_time()
                decoded = ddsm.read_ljpeg(path, shape)
                times.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
            if not np.array_equal(decoded, image):
                raise AssertionError(f"predictor {k}: decode does not round-trip")
            # CPU seconds too: on a shared machine wall time mostly measures the neighbours.
            out[f"predictor_{k}"] = {"decode_s": round(min(times), 3),
                                     "decode_cpu_s": round(min(cpu), 3),
                                     "encode_s": round(encode_s, 2),
                                     "megabytes": round(os.path.getsize(path) / 1e6, 1),
                                     "path": "imagecodecs" if k in ljpeg.STANDARD_SAFE_PREDICTORS
                                     else "imagecodecs Huffman + numpy PVRG prediction"}
    return out


def bench_ingest(patients=40, size=(600, 400), workdir=None):
    from deepmammo.sources import ingest, make_archive
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        t0 = time.perf_counter()
        make_archive("ddsm", os.path.join(tmp, "ddsm"), patients=patients, seed=0, size=size)
        synth_s = time.perf_counter() - t0
        quick = ingest("ddsm", os.path.join(tmp, "ddsm"), os.path.join(tmp, "a", "cases.csv"))
        full = ingest("ddsm", os.path.join(tmp, "ddsm"), os.path.join(tmp, "b", "cases.csv"),
                      decode_check=True)
    return {"patients": patients, "size": list(size), "synth_s": round(synth_s, 2),
            "cases": quick["counts"]["ingested"],
            "cases_per_s": quick["cases_per_second"],
            "cases_per_s_decode_check": full["cases_per_second"]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="write the figures as JSON here")
    parser.add_argument("--patients", type=int, default=40)
    parser.add_argument("--predictors", default="1,2,3,6,7")
    args = parser.parse_args(argv)
    predictors = tuple(int(k) for k in args.predictors.split(","))
    result = {"decode_4696x3024_12bit": bench_decode(predictors),
              "ingest_ddsm": bench_ingest(args.patients)}
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        from deepmammo.atomic import write_text
        write_text(args.out, text + "\n")


if __name__ == "__main__":
    main()
