"""Caffe layer types on torch, one module per family; importing this registers them all."""
from deepmammo.caffe.layers import (  # noqa: F401
                                    activation,
                                    bias,
                                    conv,
                                    data,
                                    deconv,
                                    embed,
                                    im2col,
                                    inner_product,
                                    loss,
                                    lrn,
                                    mvn,
                                    neuron,
                                    norm,
                                    pooling,
                                    recurrent,
                                    reduction,
                                    shape,
                                    spp,
                                    structure,
)
from deepmammo.caffe.layers.base import REGISTRY, Layer  # noqa: F401
