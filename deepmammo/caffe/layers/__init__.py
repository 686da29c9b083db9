"""Caffe layer types on torch, one module per family; importing this registers them all."""
from deepmammo.caffe.layers import (  # noqa: F401
                                    activation,
                                    bias,
                                    conv,
                                    data,
                                    deconv,
                                    dummy_data,
                                    embed,
                                    hdf5,
                                    im2col,
                                    image_data,
                                    inner_product,
                                    logistic_loss,
                                    loss,
                                    lrn,
                                    margin_loss,
                                    memory_data,
                                    mvn,
                                    neuron,
                                    norm,
                                    pooling,
                                    python_layer,
                                    recurrent,
                                    reduction,
                                    shape,
                                    spp,
                                    structure,
                                    window_data,
)
from deepmammo.caffe.layers.base import REGISTRY, Layer  # noqa: F401


def __getattr__(name):
    # `caffe.layers` is also pycaffe's net-spec pseudo-module: caffe.layers.Convolution(...).
    # Layer types are CamelCase; other names stay this package's (submodule imports need that).
    if not name[:1].isupper():
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from deepmammo.caffe.net_spec import layers
    return getattr(layers, name)
