"""Read and write the image files every source uses (LJPEG, DICOM, TIFF, PNG, PGM), so later
stages never need to know which format a case came in. Images come back as 2-D uint8 or
uint16 arrays; masks as bool arrays."""
import os

import numpy as np

from deepmammo.atomic import atomic_path

FORMATS = ("LJPEG", "DICOM", "TIFF", "PNG", "PGM")
_EXTENSIONS = {
    ".ljpeg": "LJPEG", ".dcm": "DICOM", ".dicom": "DICOM", ".tif": "TIFF", ".tiff": "TIFF",
    ".png": "PNG", ".pgm": "PGM",
}


class ImageError(ValueError):
    """An image or mask file that cannot be used; the message names the file."""


def find_files(root, wanted):
    """Paths of the files below `root` whose name satisfies `wanted(name)`, in sorted order;
    `root` itself when it is such a file."""
    root = os.fspath(root)
    if os.path.isfile(root):
        return [root] if wanted(os.path.basename(root)) else []
    found = []
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        found += [os.path.join(folder, f) for f in sorted(files) if wanted(f)]
    return found


def format_of(path):
    """The image format a file name implies (by extension), or raise ImageError."""
    ext = os.path.splitext(os.fspath(path))[1].lower()
    if ext in _EXTENSIONS:
        return _EXTENSIONS[ext]
    raise ImageError(f"{path}: unknown image format (extension {ext!r}; known: "
                     f"{', '.join(sorted(_EXTENSIONS))})")


def read_image(path, image_format=None, shape=None):
    """Read one greyscale image as a 2-D uint8/uint16 array.

    `shape` = (rows, cols) is required for LJPEG (the stream's own header is swapped)."""
    path = os.fspath(path)
    fmt = (image_format or format_of(path)).upper()
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: image file not found")
    if fmt == "LJPEG":
        if shape is None:
            raise ImageError(f"{path}: LJPEG needs the image shape from its .ics file")
        from deepmammo.sources import ljpeg
        with open(path, "rb") as f:
            return ljpeg.decode(f.read(), shape, source=path)
    if fmt == "DICOM":
        image = read_dicom_pixels(path)
    elif fmt == "TIFF":
        image = _read_tiff(path)
    elif fmt in ("PNG", "PGM"):
        image = _read_pil(path)
    else:
        raise ImageError(f"{path}: unsupported image format {fmt!r}")
    return _as_grey(image, path)


def _as_grey(image, path):
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] in (3, 4):
        # Greyscale stored as RGB(A): accept it only when the channels agree.
        if not (np.array_equal(image[..., 0], image[..., 1])
                and np.array_equal(image[..., 0], image[..., 2])):
            raise ImageError(f"{path}: colour image; mammograms must be greyscale")
        image = image[..., 0]
    if image.ndim != 2:
        raise ImageError(f"{path}: expected a 2-D greyscale image, got shape {image.shape}")
    if image.dtype == np.bool_:
        return image.astype(np.uint8)
    if image.dtype in (np.uint8, np.uint16):
        return image
    if np.issubdtype(image.dtype, np.integer):
        lo, hi = int(image.min(initial=0)), int(image.max(initial=0))
        if lo < 0 or hi > 65535:
            raise ImageError(f"{path}: pixel values {lo}..{hi} do not fit 16 bits")
        return image.astype(np.uint8 if hi < 256 and image.dtype.itemsize == 1 else np.uint16)
    raise ImageError(f"{path}: unsupported pixel type {image.dtype}")


def _read_pil(path):
    from PIL import Image
    try:
        with Image.open(path) as im:
            im.load()
            arr = np.array(im)
            mode = im.mode
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{path}: cannot read image ({exc})") from exc
    if mode in ("I", "I;16", "I;16B") and arr.dtype != np.uint16:
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise ImageError(f"{path}: pixel values do not fit 16 bits")
        arr = arr.astype(np.uint16)
    return arr


def _read_tiff(path):
    import imagecodecs
    try:
        with open(path, "rb") as f:
            return np.asarray(imagecodecs.tiff_decode(f.read()))
    except Exception as exc:  # imagecodecs raises its own TiffError
        try:
            return _read_pil(path)
        except ImageError:
            raise ImageError(f"{path}: cannot read TIFF ({exc})") from exc


def read_dicom(path, pixels=True):
    """pydicom dataset of `path`; ImageError (naming the file) when it is not DICOM."""
    import pydicom
    try:
        return pydicom.dcmread(path, stop_before_pixels=not pixels)
    except Exception as exc:  # pydicom raises many kinds of error on bad bytes
        raise ImageError(f"{path}: not a readable DICOM file ({exc})") from exc


def read_dicom_pixels(path, ds=None):
    """Pixel array of a DICOM file, compressed transfer syntaxes included: pydicom decodes
    what its installed plugins can; JPEG family syntaxes it cannot are decoded by imagecodecs
    frame by frame."""
    ds = ds if ds is not None else read_dicom(path)
    if "PixelData" not in ds:
        raise ImageError(f"{path}: DICOM file has no pixel data")
    if transfer_syntax(ds) is None:
        raise ImageError(f"{path}: DICOM file has no transfer syntax (file meta element "
                         "0002,0010), so its pixel data cannot be decoded")
    try:
        pixels = ds.pixel_array
    except Exception as exc:  # pydicom raises RuntimeError/NotImplementedError/ValueError/...
        pixels = _decode_with_imagecodecs(ds, path, exc)
    try:
        inverted = str(getattr(ds, "PhotometricInterpretation", "")).upper() == "MONOCHROME1"
    except Exception as exc:  # a malformed element raises on access
        raise ImageError(f"{path}: unreadable PhotometricInterpretation ({exc})") from None
    if inverted:
        # MONOCHROME1 stores white as 0 (some digital mammography exports): flip it so that,
        # as in every other source here, dense tissue is bright.
        top = (1 << dicom_bits(ds, pixels, path)) - 1
        pixels = (top - np.clip(pixels, 0, top)).astype(pixels.dtype)
    return pixels


def transfer_syntax(ds):
    """The dataset's transfer syntax UID, None when the file meta does not give one."""
    meta = getattr(ds, "file_meta", None)
    return getattr(meta, "TransferSyntaxUID", None) if meta is not None else None


def dicom_bits(ds, pixels, path="DICOM"):
    """Bits actually used per pixel (BitsStored, 1..16), else the array's container depth."""
    try:
        bits = int(getattr(ds, "BitsStored", 0) or 8 * np.asarray(pixels).dtype.itemsize)
    except Exception as exc:  # a malformed element raises on access
        raise ImageError(f"{path}: unreadable BitsStored ({exc})") from None
    if not 1 <= bits <= 16:
        raise ImageError(f"{path}: BitsStored {bits} is outside 1..16")
    return bits


def _decode_with_imagecodecs(ds, path, first_error):
    import imagecodecs
    from pydicom.encaps import generate_frames
    syntax = transfer_syntax(ds)
    try:
        compressed = syntax is not None and bool(getattr(syntax, "is_compressed", False))
    except ValueError:   # pydicom: the file meta names a UID that is no transfer syntax
        raise ImageError(f"{path}: the DICOM file meta's transfer syntax {syntax} is not a "
                         "transfer syntax UID, so its pixel data cannot be decoded") from None
    if not compressed:
        raise ImageError(f"{path}: cannot read pixel data ({first_error})") from first_error
    frames = []
    try:
        n = int(getattr(ds, "NumberOfFrames", 1) or 1)
        for frame in generate_frames(ds.PixelData, number_of_frames=n):
            for fn in (imagecodecs.ljpeg_decode, imagecodecs.jpeg8_decode,
                       imagecodecs.jpegls_decode, imagecodecs.jpeg2k_decode):
                try:
                    frames.append(np.asarray(fn(frame)))
                    break
                except Exception:
                    continue
            else:
                raise ImageError(f"{path}: no decoder for transfer syntax "
                                 f"{getattr(syntax, 'name', syntax)}")
    except ImageError:
        raise
    except Exception as exc:
        raise ImageError(f"{path}: cannot decode compressed pixel data ({exc})") from exc
    return frames[0] if len(frames) == 1 else np.stack(frames)


def read_mask(path, shape=None):
    """A mask file as a bool array (nonzero = lesion); DICOM, TIFF, PNG or PGM."""
    mask = read_image(path) != 0
    if shape is not None and mask.shape != tuple(shape):
        raise ImageError(f"{path}: mask shape {mask.shape} differs from the image's {tuple(shape)}")
    return mask


def write_png(path, array, compress_level=6):
    """Write a 2-D uint8/uint16/bool array as a greyscale PNG (8 or 16 bits; bool masks as
    1-bit PNG: a third of the time of an 8-bit one at full DDSM size), atomically: the one
    PNG writer of the pipeline (masks, crops)."""
    from PIL import Image
    array = np.ascontiguousarray(array)
    if array.ndim != 2 or array.dtype not in (np.uint8, np.uint16, np.bool_):
        raise ValueError(f"{path}: expected a 2-D uint8, uint16 or bool array, got "
                         f"{array.dtype} {array.shape}")
    image = Image.fromarray(array)  # uint16 -> mode I;16, uint8 -> L
    if array.dtype == np.bool_:
        image = image.convert("1")
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG", compress_level=compress_level)


def write_tiff(path, array):
    """Write a uint8/uint16 array as an uncompressed TIFF, atomically."""
    import imagecodecs
    array = np.ascontiguousarray(array)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(imagecodecs.tiff_encode(array))
