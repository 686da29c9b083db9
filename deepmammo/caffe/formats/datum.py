"""Caffe's Datum: one LMDB record (uint8 CHW bytes, or float_data)."""
import numpy as np

from deepmammo.caffe.proto import caffe_pb2 as pb


class DatumError(ValueError):
    pass


def array_to_datum(arr, label=0):
    """A Datum from a (C, H, W) array: uint8 goes to `data`, anything else to `float_data`."""
    arr = np.asarray(arr)
    if arr.ndim != 3 or not arr.size:
        raise DatumError(f"a Datum holds a non-empty (C, H, W) array, got shape {arr.shape}")
    datum = pb.Datum(channels=arr.shape[0], height=arr.shape[1], width=arr.shape[2],
                     label=int(label))
    if arr.dtype == np.uint8:
        datum.data = np.ascontiguousarray(arr).tobytes()
    else:
        datum.float_data.extend(np.ascontiguousarray(arr, dtype=np.float32).ravel())
    return datum


def datum_to_array(datum, where="datum"):
    """The (C, H, W) array of a Datum: uint8 from `data`, float32 from `float_data`."""
    if datum.encoded:
        raise DatumError(f"{where}: encoded (JPEG/PNG) Datums are not supported; "
                         "write raw pixels (as convert_imageset does without --encoded)")
    shape = (datum.channels, datum.height, datum.width)
    if min(shape) <= 0:
        raise DatumError(f"{where}: a Datum of shape {shape} holds no pixels (channels, height "
                         "and width must be positive)")
    # The claimed size is only compared with what the record holds, never allocated.
    n = int(np.prod(shape, dtype=np.int64))
    if len(datum.data):
        arr = np.frombuffer(datum.data, dtype=np.uint8)
    else:
        arr = np.asarray(datum.float_data, dtype=np.float32)
    if arr.size != n:
        raise DatumError(f"{where}: shape {shape} needs {n} values but the record has {arr.size}")
    return arr.reshape(shape)


def datum_to_bytes(datum):
    return datum.SerializeToString()


def datum_from_bytes(data, where="datum"):
    datum = pb.Datum()
    try:
        datum.ParseFromString(data)
    except Exception as exc:  # protobuf's DecodeError
        raise DatumError(f"{where}: not a Datum ({exc})") from None
    return datum
