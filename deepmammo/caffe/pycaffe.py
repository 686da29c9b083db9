"""pycaffe's `caffe.pycaffe` (and `caffe._caffe`) module: scripts that import names from there
(`from caffe.pycaffe import Net`) get deepmammo.caffe's, which hold the same API."""


def __getattr__(name):
    import deepmammo.caffe as caffe
    if name.startswith("__"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(caffe, name)


def __dir__():
    import deepmammo.caffe as caffe
    return dir(caffe)
