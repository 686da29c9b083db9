"""Caffe layer types on torch, one module per family; importing this registers them all."""
from deepmammo.caffe.layers import (  # noqa: F401
                                    activation,
                                    bias,
                                    conv,
                                    data,
                                    embed,
                                    inner_product,
                                    loss,
                                    lrn,
                                    mvn,
                                    neuron,
                                    norm,
                                    pooling,
                                    recurrent,
                                    structure,
)
from deepmammo.caffe.layers.base import REGISTRY, Layer  # noqa: F401
