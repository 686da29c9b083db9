"""BlobProto <-> numpy, with Caffe's legacy 4-D shapes (num, channels, height, width)."""
import numpy as np

from deepmammo.caffe.proto import caffe_pb2 as pb

_LEGACY_FIELDS = ("num", "channels", "height", "width")


class BlobError(ValueError):
    pass


def is_legacy(blob):
    """True when the blob gives its shape by num/channels/height/width, not `shape`."""
    return not blob.HasField("shape") and any(blob.HasField(f) for f in _LEGACY_FIELDS)


def blob_shape(blob):
    """The blob's shape as a tuple (4-D for legacy blobs, as Caffe reads them)."""
    if blob.HasField("shape"):
        return tuple(int(d) for d in blob.shape.dim)
    if is_legacy(blob):
        return tuple(int(getattr(blob, f)) for f in _LEGACY_FIELDS)
    # Neither given: Caffe treats it as a 1-D blob of its data.
    return (len(blob.double_data) or len(blob.data),)


def legacy_shape(shape):
    """A shape padded on the left with 1s to four axes (Caffe's Blob::LegacyShape)."""
    shape = tuple(shape)
    if len(shape) > 4:
        return None
    return (1,) * (4 - len(shape)) + shape


def shapes_match(expected, blob):
    """Caffe's ShapeEquals: legacy blobs compare by the last four axes, padded with 1s."""
    if is_legacy(blob):
        return legacy_shape(expected) == blob_shape(blob)
    return tuple(expected) == blob_shape(blob)


def _values(blob, diff):
    if diff:
        return blob.double_diff if len(blob.double_diff) else blob.diff
    return blob.double_data if len(blob.double_data) else blob.data


def check_blob(blob, diff=False, where="blob"):
    """The blob's shape, after checking that its values fill it (without converting them)."""
    shape = blob_shape(blob)
    if any(d < 0 for d in shape):
        raise BlobError(f"{where}: negative dimension in shape {shape}")
    expected = 1
    for d in shape:          # Python ints: a product of huge dimensions cannot wrap around
        expected *= d
    count = len(_values(blob, diff))
    if count != expected:
        kind = "diff" if diff else "data"
        raise BlobError(f"{where}: shape {shape} needs {expected} values but its {kind} has "
                        f"{count}")
    return shape


def blob_to_array(blob, diff=False, where="blob"):
    """The data (or diff) of a BlobProto as a float32 array of its shape."""
    shape = check_blob(blob, diff, where)
    return np.asarray(_values(blob, diff), dtype=np.float32).reshape(shape)


def array_to_blob(data, diff=None, legacy=False):
    """A BlobProto holding `data` (and `diff`) as float32, with `shape` (or legacy 4-D fields)."""
    data = np.ascontiguousarray(data, dtype=np.float32)
    blob = pb.BlobProto()
    if legacy:
        padded = legacy_shape(data.shape)
        if padded is None:
            raise BlobError(f"a legacy blob has at most 4 axes, not {data.ndim}")
        blob.num, blob.channels, blob.height, blob.width = padded
    else:
        blob.shape.dim.extend(int(d) for d in data.shape)
    blob.MergeFromString(_packed_floats(5, data))
    if diff is not None:
        diff = np.ascontiguousarray(diff, dtype=np.float32)
        if diff.shape != data.shape:
            raise BlobError(f"diff shape {diff.shape} differs from data shape {data.shape}")
        blob.MergeFromString(_packed_floats(6, diff))
    return blob


def _varint(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _packed_floats(field_number, arr):
    """The wire bytes of a packed repeated float field holding `arr`.

    Merging these bytes is a memcpy for the protobuf runtime, where extending the repeated
    field from Python converts value by value (seconds for AlexNet's 38M-value fc6)."""
    payload = np.ascontiguousarray(arr, dtype="<f4").tobytes()
    if not payload:
        return b""
    return _varint((field_number << 3) | 2) + _varint(len(payload)) + payload
