"""DeepMammo: Caffe-faithful breast mass classification (Jain & Levy), by pipeline stage.

    sources/   archives (DDSM, CBIS-DDSM, TIFF, manifest) -> cases.csv; synthetic archives
    prep/      cases.csv -> padded crops -> patient split -> augmented LMDBs + mean
    caffe/     Caffe's file formats, the torch engine behind pycaffe's API, real Caffe
    evaluate/  every snapshot -> metrics, predictions
    report/    tables, figures, saliency, HTML report
"""
import os as _os

__version__ = "0.1.0"

# Before torch loads its OpenMP runtime (every deepmammo import passes here first): idle
# OpenMP threads sleep instead of spinning. On a small shared machine spinning threads steal
# the cores the busy ones need (elementwise layers ran 3-5x slower with 2 spinning threads
# under load). Set OMP_WAIT_POLICY to override.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
