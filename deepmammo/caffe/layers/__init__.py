"""Caffe layer types on torch, one module per family; importing this registers them all."""
from deepmammo.caffe.layers import (  # noqa: F401
                                    activation,
                                    conv,
                                    data,
                                    deconv,
                                    im2col,
                                    inner_product,
                                    loss,
                                    lrn,
                                    norm,
                                    pooling,
                                    reduction,
                                    shape,
                                    spp,
                                    structure,
)
from deepmammo.caffe.layers.base import REGISTRY, Layer  # noqa: F401
