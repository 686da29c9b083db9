"""Sources: read mammography archives (DDSM, CBIS-DDSM, the paper's TIFF layout, any image+mask
manifest) into one cases table, and write synthetic archives in those formats.

    from deepmammo.sources import ingest, read_cases, load_image, load_mask, make_archive
"""


def ingest(kind, path, out_csv, **options):
    """See deepmammo.sources.ingestion.ingest."""
    from deepmammo.sources.ingestion import ingest as _ingest
    return _ingest(kind, path, out_csv, **options)


def make_archive(kind, out_dir, patients=20, seed=0, **options):
    """See deepmammo.sources.synth.make_archive."""
    from deepmammo.sources.synth import make_archive as _make
    return _make(kind, out_dir, patients=patients, seed=seed, **options)


def read_cases(path):
    from deepmammo.sources.cases import read_cases as _read
    return _read(path)


def load_image(row):
    from deepmammo.sources.cases import load_image as _load
    return _load(row)


def load_mask(row):
    from deepmammo.sources.cases import load_mask as _load
    return _load(row)
