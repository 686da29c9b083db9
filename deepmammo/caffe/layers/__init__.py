"""Caffe layer types on torch, one module per family; importing this registers them all."""
from deepmammo.caffe.layers import (  # noqa: F401
                                    activation,
                                    conv,
                                    data,
                                    dummy_data,
                                    hdf5,
                                    image_data,
                                    inner_product,
                                    logistic_loss,
                                    loss,
                                    lrn,
                                    margin_loss,
                                    memory_data,
                                    norm,
                                    pooling,
                                    structure,
                                    window_data,
)
from deepmammo.caffe.layers.base import REGISTRY, Layer  # noqa: F401
