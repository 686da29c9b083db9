"""pycaffe's logging calls: caffe.init_log(level=None, stderr=None) and caffe.log(message).

Caffe's messages go through glog; the engine's through Python's logging under "deepmammo"
(in glog's line format when `deepmammo train` runs). init_log sets that logger's threshold from
glog's levels (0 INFO, 1 WARNING, 2 ERROR, 3 FATAL) and, with stderr=True, makes sure the
messages reach stderr; log(message) writes one INFO line there.
"""
import logging
import sys

_GLOG_LEVELS = {0: logging.INFO, 1: logging.WARNING, 2: logging.ERROR, 3: logging.CRITICAL}
_logger = logging.getLogger("deepmammo")


def init_log(level=None, stderr=None):
    if level is not None:
        _logger.setLevel(_GLOG_LEVELS.get(int(level), logging.CRITICAL))
    elif _logger.level == logging.NOTSET:
        _logger.setLevel(logging.INFO)
    if stderr and not any(getattr(h, "stream", None) is sys.stderr for h in _logger.handlers):
        from deepmammo.caffe.train_log import GlogFormatter
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(GlogFormatter())
        _logger.addHandler(handler)


def log(message):
    _logger.info(str(message), extra={"glog_source": "_caffe.cpp:0"})
