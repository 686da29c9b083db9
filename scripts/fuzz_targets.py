"""What the fuzz tests (tests/test_fuzz_readers.py) and the long campaign
(scripts/fuzz_campaign.py, `make fuzz`) feed to every reader: real seed files made here, the
mutations applied to them, and the error types each reader documents (docs/errors.md).

A reader passes a mutant when it returns or raises one of its documented errors: ValueError
(every reader's own error class is one) or OSError (the file system). Anything else is a
traceback a user would see. For LJPEG, whose pixels are known, a truncated scan that still
decodes is silent garbage."""
import os
import re

import numpy as np

DOCUMENTED = (ValueError, OSError)

# Numbers a mutation puts in place of a number of the seed: past the int32 / uint32 / int64
# ranges Caffe and numpy use, negative, zero.
HUGE_NUMBERS = (b"2147483648", b"4294967296", b"9223372036854775808",
                b"99999999999999999999999999", b"-1", b"-2147483649", b"0")
MUTATIONS = ("flip", "truncate", "cut-keep-end", "insert", "number", "non-utf8", "empty",
             "duplicate")


def mutate(data, choose):
    """One mutant of `data` (bytes). `choose(kind, n)` returns an int in 0..n-1: hypothesis'
    draws in the tests, a seeded random generator in the campaign. Returns (kind, bytes)."""
    kind = MUTATIONS[choose("mutation", len(MUTATIONS))]
    n = len(data)
    if kind == "empty" or n == 0:
        return "empty", b""
    if kind == "flip":
        out = bytearray(data)
        for _ in range(1 + choose("flips", 4)):
            out[choose("at", n)] ^= 1 << choose("bit", 8)
        return kind, bytes(out)
    if kind == "truncate":
        return kind, data[:choose("at", n)]
    if kind == "cut-keep-end":   # cut short, but ending as the file did (an end marker)
        return kind, data[:choose("at", max(n - 2, 1))] + data[-2:]
    if kind == "insert":
        at = choose("at", n + 1)
        junk = bytes(choose("byte", 256) for _ in range(1 + choose("length", 16)))
        return kind, data[:at] + junk + data[at:]
    if kind == "duplicate":
        a = choose("at", n)
        b = min(n, a + 1 + choose("length", 64))
        return kind, data[:b] + data[a:b] + data[b:]
    if kind == "number":
        numbers = [m.span() for m in re.finditer(rb"-?\d+", data[:65536])]
        if not numbers:
            return mutate(data, lambda what, k: 0 if what == "mutation" else choose(what, k))
        a, b = numbers[choose("number", len(numbers))]
        return kind, data[:a] + HUGE_NUMBERS[choose("value", len(HUGE_NUMBERS))] + data[b:]
    # non-utf8: a Latin-1 or invalid byte inside the text
    at = choose("at", n + 1)
    return kind, data[:at] + (b"\xe9", b"\xff", b"\xc3\x28", b"\x80")[choose("byte", 4)] + data[at:]


# ----------------------------------------------------------------------------- seeds

NET = b"""name: "fuzz"
layer { name: "data" type: "Input" top: "data"
  input_param { shape { dim: 1 dim: 1 dim: 12 dim: 12 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  param { lr_mult: 1 } param { lr_mult: 2 }
  convolution_param { num_output: 4 kernel_size: 3 stride: 1 pad: 1
    weight_filler { type: "gaussian" std: 0.01 } } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "fc" type: "InnerProduct" bottom: "pool1" top: "fc"
  inner_product_param { num_output: 2 } }
"""

SOLVER = b"""net: "train_val.prototxt"
test_iter: 10
test_interval: 100
base_lr: 0.001
lr_policy: "step"
gamma: 0.1
stepsize: 1000
momentum: 0.9
weight_decay: 0.0005
max_iter: 4000
snapshot: 1000
snapshot_prefix: "snapshots/levynet"
type: "SGD"
random_seed: 1
"""

ICS = b"""ics_version 1.0
filename A-1234-1
DATE_OF_STUDY 2 7 95
PATIENT_AGE 67
FILM
FILM_TYPE REGULAR
DENSITY 3
DATE_DIGITIZED 22 6 1997
DIGITIZER LUMISYS LASER
SELECTED
LEFT_CC LINES 120 PIXELS_PER_LINE 80 BITS_PER_PIXEL 12 RESOLUTION 50 OVERLAY
LEFT_MLO LINES 120 PIXELS_PER_LINE 80 BITS_PER_PIXEL 12 RESOLUTION 50 NON_OVERLAY
RIGHT_CC LINES 120 PIXELS_PER_LINE 80 BITS_PER_PIXEL 12 RESOLUTION 50 NON_OVERLAY
RIGHT_MLO LINES 120 PIXELS_PER_LINE 80 BITS_PER_PIXEL 12 RESOLUTION 50 NON_OVERLAY
"""

OVERLAY = b"""TOTAL_ABNORMALITIES 2
ABNORMALITY 1
LESION_TYPE MASS SHAPE IRREGULAR MARGINS ILL_DEFINED
ASSESSMENT 5
SUBTLETY 5
PATHOLOGY MALIGNANT
TOTAL_OUTLINES 1
BOUNDARY
\t41 61 6 7 6 6 0 0 0 1 1 1 1 1 1 6 7 7 0 1 2 0 0 1 0 2 2 3 2 2 1 1 2 1 3 4 4 4 5 4 #
ABNORMALITY 2
LESION_TYPE CALCIFICATION TYPE PLEOMORPHIC DISTRIBUTION CLUSTERED
ASSESSMENT 4
SUBTLETY 3
PATHOLOGY BENIGN
TOTAL_OUTLINES 2
BOUNDARY
\t20 30 2 2 2 4 4 4 6 6 6 0 0 0 #
CORE
\t21 31 2 4 6 0 #
"""

CONFIG = b"""experiment: fuzz
train_val: prototxt/levynet/train_val.prototxt
solver: solvers/levynet.prototxt
dataset: data/datasets/example/seed0/small-noaug
epochs: 2
seed: 3
"""


def _image(rows=24, cols=20, bits=12, seed=0):
    rng = np.random.RandomState(seed)
    return (rng.randint(0, 40, (rows, cols)).cumsum(axis=1) % (1 << bits)).astype(np.uint16)


def write_seeds(root):
    """Write one real seed file per reader under `root`; return {reader: seed path}."""
    from deepmammo.caffe.formats.binaryproto import write_mean
    from deepmammo.caffe.formats.blobproto import array_to_blob
    from deepmammo.caffe.formats.datum import array_to_datum
    from deepmammo.caffe.proto import caffe_pb2 as pb
    from deepmammo.sources import ljpeg
    from deepmammo.sources.cbis import write_dicom
    from deepmammo.sources.images import write_png

    os.makedirs(root, exist_ok=True)
    seeds = {}

    def put(name, data):
        path = os.path.join(root, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    seeds["prototxt"] = put("net.prototxt", NET)
    seeds["solver"] = put("solver.prototxt", SOLVER)
    rng = np.random.RandomState(1)
    net = pb.NetParameter(name="fuzz")
    for name, shapes in (("conv1", [(4, 1, 3, 3), (4,)]), ("fc", [(2, 144), (2,)])):
        layer = net.layer.add(name=name, type="Convolution" if name == "conv1"
                              else "InnerProduct")
        for shape in shapes:
            layer.blobs.add().CopyFrom(array_to_blob(rng.randn(*shape)))
    seeds["caffemodel"] = put("w.caffemodel", net.SerializeToString())
    state = pb.SolverState(iter=100, learned_net="w.caffemodel", current_step=1)
    for shape in ((4, 1, 3, 3), (4,)):
        state.history.add().CopyFrom(array_to_blob(rng.randn(*shape)))
    seeds["solverstate"] = put("s.solverstate", state.SerializeToString())
    write_mean(rng.rand(3, 6, 6) * 255, os.path.join(root, "mean.binaryproto"))
    seeds["binaryproto"] = os.path.join(root, "mean.binaryproto")
    datum = array_to_datum(rng.randint(0, 255, (3, 6, 5)).astype(np.uint8), label=1)
    seeds["datum"] = put("datum.bin", datum.SerializeToString())
    seeds["lmdb-record"] = seeds["datum"]
    image = _image()
    seeds["ljpeg"] = put("image.LJPEG", ljpeg.encode(image, 6, 12))
    np.save(os.path.join(root, "image.npy"), image)
    seeds["ics"] = put("A-1234-1.ics", ICS)
    seeds["overlay"] = put("A_1234_1.LEFT_CC.OVERLAY", OVERLAY)
    write_dicom(os.path.join(root, "image.dcm"), _image(16, 12), "P1", "full", "L", "CC")
    seeds["dicom"] = os.path.join(root, "image.dcm")
    mask = np.zeros((16, 12), bool)
    mask[4:9, 3:8] = True
    write_png(os.path.join(root, "image_mask.png"), mask)
    seeds["manifest"] = put("manifest.csv", b"patient_id,image,mask,pathology,side,view\n"
                                            b"P1,image.dcm,image_mask.png,MALIGNANT,LEFT,CC\n"
                                            b"P2,image.dcm,image_mask.png,BENIGN,RIGHT,MLO\n")
    write_png(os.path.join(root, "full.png"), _image(16, 12).astype(np.uint16))
    seeds["cases.csv"] = put("cases.csv", (
        b"case_id,patient_id,side,view,abnormality_id,source,source_split,image,image_format,"
        b"mask,pathology,label,lesion_type,shape,margins,calc_type,calc_distribution,"
        b"assessment,subtlety,density,scanner,bits,rows,cols,bbox\n"
        b"P1_LEFT_CC_1,P1,LEFT,CC,1,manifest,,full.png,PNG,image_mask.png,MALIGNANT,1,MASS,"
        b"OVAL,CIRCUMSCRIBED,,,4,5,2,,16,16,12,\"4,3,9,8\"\n"))
    seeds["config"] = put("config.yaml", CONFIG)
    return seeds


# ----------------------------------------------------------------------------- readers

def _read_prototxt(path):
    from deepmammo.caffe.formats.prototxt import read_net
    return read_net(path)


def _read_solver(path):
    from deepmammo.caffe.formats.prototxt import read_solver
    return read_solver(path)


def _read_caffemodel(path):
    from deepmammo.caffe.formats.caffemodel import layer_blobs, read_caffemodel
    return layer_blobs(read_caffemodel(path))


def _read_solverstate(path):
    from deepmammo.caffe.formats.solverstate import history_arrays, read_solverstate
    return history_arrays(read_solverstate(path))


def _read_binaryproto(path):
    from deepmammo.caffe.formats.binaryproto import read_mean
    return read_mean(path)


def _read_datum(path):
    from deepmammo.caffe.formats.datum import datum_from_bytes, datum_to_array
    with open(path, "rb") as f:
        return datum_to_array(datum_from_bytes(f.read(), where=path), where=path)


def _read_lmdb_record(path):
    """The mutant as a record of a real LMDB, read as the Data layer reads records."""
    from deepmammo.caffe.formats.datum import datum_to_array
    from deepmammo.caffe.formats.lmdb_io import LMDBReader, LMDBWriter
    with open(path, "rb") as f:
        value = f.read()
    db = path + ".lmdb"
    with LMDBWriter(db) as w:
        w.put(b"00000000_x", value)
    with LMDBReader(db) as r:
        return [datum_to_array(d, where=k) for k, d in r.datums()]


def _read_ljpeg(path):
    from deepmammo.sources import ljpeg
    with open(path, "rb") as f:
        return ljpeg.decode(f.read(), (24, 20), source=path)


def _read_ics(path):
    from deepmammo.sources import ddsm
    return ddsm.read_ics(path)


def _read_overlay(path):
    """As the DDSM collector uses an overlay: parse it, then draw every outline."""
    import warnings

    from deepmammo.sources import ddsm
    masks = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ddsm.OutlineClippedWarning)
        for abn in ddsm.read_overlay(path):
            for outline in abn.outlines:
                masks.append(ddsm.outline_mask(outline, (120, 80)))
    return masks


def _read_dicom(path):
    from deepmammo.sources import images
    return images.read_image(path)


def _read_manifest(path):
    """The whole manifest ingest; a bad row is reported, a bad file raises."""
    from deepmammo.sources.ingestion import ingest
    return ingest("manifest", path, path + ".out" + os.sep + "cases.csv")


def _read_cases(path):
    from deepmammo.sources import cases
    return cases.read_cases(path)


def _read_config(path):
    from deepmammo.experiment import load_config
    return load_config(path, ["epochs=3", "seed=2"], environ={})


READERS = {
    "prototxt": _read_prototxt, "solver": _read_solver, "caffemodel": _read_caffemodel,
    "solverstate": _read_solverstate, "binaryproto": _read_binaryproto, "datum": _read_datum,
    "lmdb-record": _read_lmdb_record, "ljpeg": _read_ljpeg, "ics": _read_ics,
    "overlay": _read_overlay, "dicom": _read_dicom, "manifest": _read_manifest,
    "cases.csv": _read_cases, "config": _read_config,
}


def feed(reader, seed_path, data, workdir):
    """Write mutant `data` beside the seed's support files and run `reader` on it.
    Returns "ok", "error" (documented) or raises what the reader raised otherwise."""
    path = os.path.join(workdir, "mutant" + _suffix(seed_path))
    with open(path, "wb") as f:
        f.write(data)
    try:
        READERS[reader](path)
    except DOCUMENTED:
        return "error"
    return "ok"


def _suffix(seed_path):
    name = os.path.basename(seed_path)
    if name.endswith(".ics"):
        return "-1.ics"
    if ".OVERLAY" in name:
        return ".LEFT_CC.OVERLAY"
    return os.path.splitext(name)[1]


def ljpeg_outcome(kind, data, seed_dir):
    """For an LJPEG mutant that decoded: "garbage" when a truncated scan gave pixels (the
    reader must refuse it), "changed" when a flip or insertion made a stream that is a valid
    encoding of other pixels (LJPEG has no checksum: nothing in the file can tell), else
    None (the seed's pixels)."""
    from deepmammo.sources import ljpeg
    try:
        image = ljpeg.decode(data, (24, 20))
    except DOCUMENTED:
        return None
    if np.array_equal(image, np.load(os.path.join(seed_dir, "image.npy"))):
        return None
    return "garbage" if kind in ("truncate", "cut-keep-end", "empty") else "changed"
