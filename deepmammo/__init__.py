"""DeepMammo: Caffe-faithful breast mass classification (Jain & Levy), by pipeline stage.

    sources/   archives (DDSM, CBIS-DDSM, TIFF, manifest) -> cases.csv; synthetic archives
    prep/      cases.csv -> padded crops -> patient split -> augmented LMDBs + mean
    caffe/     Caffe's file formats, the torch engine behind pycaffe's API, real Caffe
    evaluate/  every snapshot -> metrics, predictions
    report/    tables, figures, saliency, HTML report
"""
__version__ = "0.1.0"
