"""Lossless JPEG (SOF3, one component) as written by the Stanford PVRG codec that made DDSM.

Two things differ from the standard, and both break ordinary decoders:

* DDSM's SOF3 header has width and height swapped relative to the .ics file. The encoder
  worked in the header's geometry (its "rows" are `width = LINES` samples long), so we decode
  in that geometry and simply reshape the flat samples to (LINES, PIXELS_PER_LINE).
* PVRG applies the selected predictor on the first row too, against an imaginary row above
  filled with 2^(P-1); column 0 is always predicted from the sample above (the imaginary row
  for the very first sample). The standard uses predictor 1 on the first row instead. For
  predictors 1, 4 and 5 both rules give the same prediction, so standard decoders are exact
  there; for 2, 3, 6 and 7 they are not.

Decoding: imagecodecs' C decoder does the Huffman work. For predictors 2, 3, 6, 7 we rewrite
the predictor byte in the SOS header to 1, decode (the decoder works modulo 2^16), recover the
exact difference values from that image with numpy, and undo PVRG's prediction ourselves,
vectorised: a row at a time for 2 and 3, a column at a time (all rows together) for 6 below
16 bits, and an anti-diagonal wavefront for 7 (and 6 at 16 bits, where differences can wrap).
Full-size timings are in the stage's report (python -m deepmammo.sources.benchmark).
"""
import numpy as np

try:  # imagecodecs is a declared dependency; the import is guarded only to name it clearly.
    import imagecodecs
except ImportError:  # pragma: no cover
    imagecodecs = None

SOI, EOI, SOF3, DHT, SOS, DRI = 0xD8, 0xD9, 0xC3, 0xC4, 0xDA, 0xDD
STANDARD_SAFE_PREDICTORS = (1, 4, 5)


class LJPEGError(ValueError):
    """A lossless-JPEG stream that cannot be decoded; the message names the file."""


class LJPEGHeader:
    """What the SOF3 and SOS segments say."""

    def __init__(self, precision, height, width, components, predictor, point_transform,
                 sos_predictor_offset):
        self.precision = precision
        self.height = height
        self.width = width
        self.components = components
        self.predictor = predictor
        self.point_transform = point_transform
        self.sos_predictor_offset = sos_predictor_offset
        self.code_lengths = None    # Huffman code length per difference category (0..16)
        self.restarts = False       # restart markers in the scan (DRI)

    def __repr__(self):
        return (f"LJPEGHeader(P={self.precision}, height={self.height}, width={self.width}, "
                f"predictor={self.predictor})")


def parse_header(data, source="<bytes>"):
    """Walk the marker segments up to SOS; raise LJPEGError naming `source` when malformed."""
    if len(data) < 4 or data[0] != 0xFF or data[1] != SOI:
        raise LJPEGError(f"{source}: not a JPEG stream (no SOI marker at the start)")
    pos, sof, tables, restarts = 2, None, {}, False
    while True:
        # Skip fill bytes between segments.
        while pos < len(data) and data[pos] == 0xFF and pos + 1 < len(data) and data[pos + 1] == 0xFF:
            pos += 1
        if pos + 4 > len(data):
            raise LJPEGError(f"{source}: truncated before the SOS segment (at byte {pos})")
        if data[pos] != 0xFF:
            raise LJPEGError(f"{source}: expected a marker at byte {pos}, found 0x{data[pos]:02X}")
        marker = data[pos + 1]
        length = (data[pos + 2] << 8) | data[pos + 3]
        body = data[pos + 4:pos + 2 + length]
        if len(body) != length - 2:
            raise LJPEGError(f"{source}: truncated inside marker 0xFF{marker:02X} at byte {pos}")
        if marker in (0xC0, 0xC1, 0xC2, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            raise LJPEGError(f"{source}: frame type 0xFF{marker:02X} is not lossless SOF3")
        if marker == DRI:
            restarts = len(body) >= 2 and ((body[0] << 8) | body[1]) > 0
        if marker == SOF3:
            if len(body) < 6:
                raise LJPEGError(f"{source}: SOF3 segment too short")
            sof = (body[0], (body[1] << 8) | body[2], (body[3] << 8) | body[4], body[5])
        elif marker == DHT:
            _read_dht(body, tables, source)
        elif marker == SOS:
            if sof is None:
                raise LJPEGError(f"{source}: SOS before any SOF3 frame header")
            if not tables:
                raise LJPEGError(f"{source}: no Huffman table (DHT) before SOS")
            if not body:
                raise LJPEGError(f"{source}: SOS segment too short")
            ns = body[0]
            if len(body) < 1 + 2 * ns + 3:
                raise LJPEGError(f"{source}: SOS segment too short")
            pred_off = pos + 4 + 1 + 2 * ns
            precision, height, width, comps = sof
            header = LJPEGHeader(precision, height, width, comps, data[pred_off],
                                 data[pred_off + 2] & 0x0F, pred_off)
            header.code_lengths = tables.get(body[2] >> 4) if ns >= 1 else None
            header.restarts = restarts
            _check_header(header, source)
            return header, pos + 2 + length
        pos += 2 + length


def _read_dht(body, tables, source):
    """Huffman tables of a DHT segment into `tables`: id -> code length per category (0 where
    the category has no code)."""
    pos = 0
    while pos < len(body):
        if pos + 17 > len(body):
            raise LJPEGError(f"{source}: DHT segment too short")
        table_id = body[pos] & 0x0F
        counts = body[pos + 1:pos + 17]
        n = sum(counts)
        values = body[pos + 17:pos + 17 + n]
        if len(values) != n:
            raise LJPEGError(f"{source}: DHT segment too short for its {n} codes")
        lengths = np.zeros(17, np.int64)
        k = 0
        for size, count in enumerate(counts, 1):
            for v in values[k:k + count]:
                if v > 16:
                    raise LJPEGError(f"{source}: Huffman table codes category {v} (0..16 only)")
                lengths[v] = size
            k += count
        tables[table_id] = lengths
        pos += 17 + n


def _entropy_segment(data, scan_start):
    """(bytes of entropy-coded data after unstuffing, its last byte, the code of the marker
    that ends it) for the scan starting at `scan_start`."""
    seg = np.frombuffer(data, np.uint8, offset=scan_start)
    ff = np.flatnonzero(seg[:-1] == 0xFF)
    following = seg[ff + 1]
    ends = ff[following != 0x00]
    if not len(ends):
        return len(seg) - len(ff), None, None
    end = int(ends[0])
    stuffed = int(np.count_nonzero(ff < end))
    marker = int(seg[end + 1])
    k = end + 1
    while marker == 0xFF and k + 1 < len(seg):   # fill bytes before the marker
        k += 1
        marker = int(seg[k])
    # The last data byte, unstuffed (a stuffed 0xFF is followed by 0x00).
    last = None
    if end >= 2 and seg[end - 1] == 0 and seg[end - 2] == 0xFF:
        last = 0xFF
    elif end >= 1:
        last = int(seg[end - 1])
    return end - stuffed, last, marker


def check_scan_length(image, header, data, scan_start, source):
    """Hold the entropy-coded data to the samples decoded from it.

    A decoder that runs out of data pads with zero bits and still returns an image, so a scan
    cut short (or garbage inserted before the end marker) decodes silently into wrong pixels.
    From the decoded samples, their predictions and the file's Huffman table, the exact number
    of bits the encoder wrote is known; the scan must hold that many, plus under one byte of
    padding. Raises LJPEGError naming the row where the data ran out or the bytes left over."""
    if header.code_lengths is None or header.restarts:
        return   # restart intervals (not used by DDSM) would need a marker-aware count
    available, last_byte, marker = _entropy_segment(data, scan_start)
    if marker != EOI:
        what = "no marker" if marker is None else f"marker 0xFF{marker:02X}"
        raise LJPEGError(f"{source}: the scan ends with {what}, not the end-of-image marker")
    h, w = image.shape
    cost = _bit_costs(header.code_lengths)
    half = 1 << (header.precision - 1)
    used = 0
    rows_per_block = max(1, (1 << 20) // w)
    for r0 in range(0, h, rows_per_block):
        r1 = min(h, r0 + rows_per_block)
        if r0:
            block = image[r0 - 1:r1]
        else:
            block = np.empty((r1 + 1, w), np.uint16)
            block[0] = half
            block[1:] = image[:r1]
        bits = _sample_bits(block, header.predictor, header.precision, cost).ravel()
        if bits.min() < 0:
            k = int(np.flatnonzero(bits < 0)[0])
            raise LJPEGError(f"{source}: corrupt scan: the sample at stream row "
                             f"{r0 + k // w + 1} of {h} has no Huffman code")
        block_total = int(bits.sum(dtype=np.int64))
        if used + block_total > 8 * available:
            stop = int(np.searchsorted(np.cumsum(bits, dtype=np.int64), 8 * available - used,
                                       side="right"))
            raise LJPEGError(f"{source}: the scan ends before every sample is decoded: its "
                             f"data runs out at stream row {r0 + stop // w + 1} of {h} "
                             f"(file truncated or corrupt)")
        used += block_total
    needed = (used + 7) // 8
    if available > needed:
        raise LJPEGError(f"{source}: {available - needed} byte(s) of data left over after the "
                         f"last sample (row {h} of {h}) before the end-of-image marker "
                         "(corrupt file)")
    padding = 8 * available - used
    if padding and last_byte is not None and (~last_byte) & ((1 << padding) - 1):
        # JPEG pads the last byte with 1-bits: other bits there mean the samples before were
        # decoded out of step with what the encoder wrote.
        raise LJPEGError(f"{source}: the scan's last byte is not padded with 1-bits after "
                         f"the last sample (row {h} of {h}): corrupt entropy-coded data")


def _bit_costs(lengths):
    """Bits the encoder writes for a difference of magnitude m (index 0..32768): the Huffman
    code of its category plus that many extra bits (none for category 16); -1 where the
    category has no code."""
    mag = np.arange(32769)
    ssss = np.zeros(mag.shape, np.int64)
    ssss[1:] = np.floor(np.log2(mag[1:])).astype(np.int64) + 1
    cost = lengths[ssss] + np.where(ssss == 16, 0, ssss)
    cost[lengths[ssss] == 0] = -1
    return cost.astype(np.int32)


def _sample_bits(x, predictor, precision, cost):
    """Bits of every sample of block `x` (header geometry) but its first row, which only
    serves as the row above (PVRG's imaginary row of 2^(P-1) when the block starts the image:
    pass it with a first row of that value)."""
    # Predictors 1-4 need only sums and differences, exact modulo 2^16 in uint16 arithmetic
    # (half the memory traffic); 5-7 shift a signed or 17-bit value, so they take int32.
    x = x.astype(np.uint16 if predictor <= 4 else np.int32, copy=False)
    above, cur = x[:-1], x[1:]
    left, above_left, above_right = cur[:, :-1], above[:, :-1], above[:, 1:]
    pred = np.empty_like(cur)
    pred[:, 0] = above[:, 0]           # column 0 is predicted from above
    if predictor == 1:
        pred[:, 1:] = left
    elif predictor == 2:
        pred[:, 1:] = above_right
    elif predictor == 3:
        pred[:, 1:] = above_left
    elif predictor == 4:
        pred[:, 1:] = left + above_right - above_left
    elif predictor == 5:
        pred[:, 1:] = left + ((above_right - above_left) >> 1)
    elif predictor == 6:
        pred[:, 1:] = above_right + ((left - above_left) >> 1)
    else:
        pred[:, 1:] = (left + above_right) >> 1
    d = (cur - pred).astype(np.uint16, copy=False)   # the difference modulo 2^16
    return cost[np.minimum(d, np.negative(d))]           # its magnitude as a signed 16-bit


def _check_header(h, source):
    if h.components != 1:
        raise LJPEGError(f"{source}: {h.components} components; DDSM files have one")
    if not 2 <= h.precision <= 16:
        raise LJPEGError(f"{source}: sample precision {h.precision} out of range 2..16")
    if not 1 <= h.predictor <= 7:
        raise LJPEGError(f"{source}: predictor {h.predictor} out of range 1..7")
    if h.point_transform:
        raise LJPEGError(f"{source}: point transform {h.point_transform} is not supported")
    if h.height == 0 or h.width == 0:
        raise LJPEGError(f"{source}: zero image size in SOF3 ({h.width}x{h.height})")


def _check_complete(data, scan_start, source):
    """Reject streams cut short: the entropy-coded data must be followed by EOI."""
    tail = data[-64:] if len(data) - scan_start > 64 else data[scan_start:]
    if bytes(tail).rstrip(b"\x00").endswith(b"\xff\xd9"):
        return
    raise LJPEGError(f"{source}: truncated (no end-of-image marker after the scan; "
                     f"file is {len(data)} bytes)")


def _codec_decode(data, source):
    """Decode with imagecodecs' lossless-JPEG decoders (standard first-row rule)."""
    if imagecodecs is None:  # pragma: no cover
        raise LJPEGError(f"{source}: imagecodecs is not installed")
    errors = []
    for name in ("ljpeg_decode", "jpegsof3_decode"):
        fn = getattr(imagecodecs, name, None)
        if fn is None:
            continue
        try:
            return np.asarray(fn(data))
        except Exception as exc:  # codec errors have codec-specific classes
            errors.append(f"{name}: {exc}")
    raise LJPEGError(f"{source}: cannot decode ({'; '.join(errors) or 'no decoder available'})")


def _standard_predictor1_differences(x1, precision):
    """Differences (mod 2^16) from an image decoded with the standard predictor-1 rules."""
    d = np.empty(x1.shape, np.uint16)
    d[:, 1:] = x1[:, 1:] - x1[:, :-1]  # uint16 arithmetic wraps modulo 2^16, as the codec does
    d[1:, 0] = x1[1:, 0] - x1[:-1, 0]
    d[0, 0] = (int(x1[0, 0]) - (1 << (precision - 1))) & 0xFFFF
    return d


def decode_header_geometry(data, source="<bytes>"):
    """Decode a PVRG stream to a uint16 array in the header's (height, width) geometry."""
    data = bytes(data)
    header, scan_start = parse_header(data, source)
    _check_complete(data, scan_start, source)
    if header.predictor in STANDARD_SAFE_PREDICTORS:
        image = _codec_decode(data, source)
    else:
        patched = bytearray(data)
        patched[header.sos_predictor_offset] = 1
        x1 = _codec_decode(bytes(patched), source)
        _check_shape(x1, header, source)
        d = _standard_predictor1_differences(x1.astype(np.uint16, copy=False), header.precision)
        image = undo_pvrg_prediction(d, header.predictor, header.precision)
    _check_shape(image, header, source)
    if image.dtype != np.uint16:
        image = image.astype(np.uint16)
    if header.precision < 16 and int(image.max(initial=0)) >> header.precision:
        raise LJPEGError(f"{source}: decoded samples exceed {header.precision} bits "
                         "(corrupt entropy-coded data)")
    check_scan_length(image, header, data, scan_start, source)
    return image


def _check_shape(image, header, source):
    if image.shape != (header.height, header.width):
        raise LJPEGError(f"{source}: decoder returned shape {image.shape}, header says "
                         f"{(header.height, header.width)}")


def undo_pvrg_prediction(d, predictor, precision):
    """Rebuild samples from difference values `d` (uint16, mod 2^16) with PVRG's rules."""
    d = np.ascontiguousarray(d, dtype=np.uint16)
    half = np.uint16(1 << (precision - 1))
    if predictor == 1:
        return _undo_left(d, half)
    if predictor == 2:
        # Every sample (column 0 included) is predicted from above; the imaginary row is `half`.
        # A row loop beats cumsum(axis=0), which walks memory column-wise.
        x = np.empty_like(d)
        x[0] = d[0] + half
        for r in range(1, d.shape[0]):
            np.add(x[r - 1], d[r], out=x[r])
        return x
    if predictor == 3:
        return _undo_upper_left(d, half)
    if predictor == 6:
        return _undo_p6(d, half, precision)
    return _undo_wavefront(d, predictor, int(half), precision)


def _undo_left(d, half):
    col0 = np.cumsum(d[:, 0], dtype=np.uint16) + half
    d = d.copy()
    d[:, 0] = col0
    return np.cumsum(d, axis=1, dtype=np.uint16)


def _undo_upper_left(d, half):
    h, w = d.shape
    x = np.empty((h, w), np.uint16)
    x[:, 0] = np.cumsum(d[:, 0], dtype=np.uint16) + half  # column 0: from above
    x[0, 1:] = half + d[0, 1:]
    for r in range(1, h):
        np.add(x[r - 1, :-1], d[r, 1:], out=x[r, 1:])
    return x


def _undo_p6(d, half, precision):
    """Predictor 6: Rb + ((Ra - Rc) >> 1). With e = x - (row above), e[c] = (e[c-1] >> 1) + d[c]
    within a row and independent of the row above, so all rows advance together one column at a
    time; then x is a cumulative sum down the columns. Exact when no sample difference wraps
    modulo 2^16, which holds for precision < 16; 16-bit streams take the general wavefront."""
    if precision >= 16:
        return _undo_wavefront(d, 6, int(half), precision)
    ds = np.ascontiguousarray(d.view(np.int16).T, dtype=np.int32)  # (width, height)
    e = np.empty_like(ds)
    e[0] = ds[0]
    for c in range(1, ds.shape[0]):
        np.right_shift(e[c - 1], 1, out=e[c])
        e[c] += ds[c]
    # x[r, c] = half + sum of e[0..r, c]: a cumulative sum along the contiguous axis of e's layout.
    np.cumsum(e, axis=1, out=e)
    e += int(half)
    # Casting int32 to uint16 keeps the low 16 bits: the modulo-2^16 the codec works in.
    return np.ascontiguousarray(e.astype(np.uint16).T)


def _undo_wavefront(d, predictor, half, precision=16):
    """General PVRG reconstruction along anti-diagonals: every sample on r + c = k depends only
    on diagonals k-1 and k-2, so each diagonal is one vectorised step. Works in a skewed copy
    (row k holds diagonal k) so every step reads and writes contiguous memory.

    Below 16 bits a valid stream never wraps, so signed differences are added without the
    modulo; at 16 bits every step is taken modulo 2^16 as PVRG does."""
    h, w = d.shape
    n_diag = h + w - 1
    wrap = precision >= 16
    # Skewed layout: ds[k, r + 1] = d[r, k - r]; column 0 stands for the imaginary row above.
    ds = np.zeros((n_diag, h + 1), np.int32)
    _skew_view(ds, h, w)[...] = d if wrap else d.view(np.int16)
    s = np.zeros((n_diag + 1, h + 1), np.int32)  # s[k + 1] is diagonal k; s[0] is diagonal -1
    s[:, 0] = half
    tmp = np.empty(h + 1, np.int32)
    for k in range(n_diag):
        lo, hi = max(0, k - w + 1), min(k, h - 1)
        pred = tmp[:hi - lo + 1]
        left = s[k, lo + 1:hi + 2]        # x[r, c-1]
        above = s[k, lo:hi + 1]           # x[r-1, c]
        if predictor == 7:
            np.add(left, above, out=pred)
            np.right_shift(pred, 1, out=pred)
        else:
            upleft = s[k - 1, lo:hi + 1] if k else s[0, lo:hi + 1]   # x[r-1, c-1]
            if predictor == 6:
                pred[...] = above + ((left - upleft) >> 1)
            elif predictor == 5:
                pred[...] = left + ((above - upleft) >> 1)
            elif predictor == 4:
                pred[...] = left + above - upleft
            else:
                raise ValueError(f"wavefront does not handle predictor {predictor}")
        if hi == k:  # the cell in column 0 is predicted from above
            pred[-1] = above[-1]
        cur = s[k + 1, lo + 1:hi + 2]
        np.add(pred, ds[k, lo + 1:hi + 2], out=cur)
        if wrap:
            np.bitwise_and(cur, 0xFFFF, out=cur)
    # Valid streams give 0..2^P-1 here; the cast keeps the low 16 bits of anything else, which
    # the caller's range check then reports as corrupt data.
    return _skew_view(s[1:], h, w).astype(np.uint16)


def _skew_view(a, h, w):
    """A (h, w) view of skewed storage `a` (rows = anti-diagonals, column r + 1 = row r):
    element [r, c] is a[r + c, r + 1]. Strides do the skew, so no index arrays are built."""
    item = a.itemsize
    row_stride = a.strides[0]
    return np.lib.stride_tricks.as_strided(
        a[:, 1:], shape=(h, w), strides=(row_stride + item, row_stride), writeable=True)


def decode(data, shape, source="<bytes>"):
    """Decode a DDSM .LJPEG stream to a uint16 array of `shape` = (lines, pixels_per_line)."""
    image = decode_header_geometry(data, source)
    lines, ppl = (int(v) for v in shape)
    if image.size != lines * ppl:
        raise LJPEGError(f"{source}: {image.shape[1]}x{image.shape[0]} samples in the stream, "
                         f"expected {lines} lines x {ppl} pixels per line")
    return image.reshape(lines, ppl)


# ----------------------------------------------------------------------------- encoder

def _pvrg_predictions(x, predictor, precision):
    """The prediction PVRG's encoder makes for every sample of `x` (header geometry), int64."""
    x = x.astype(np.int64)
    half = 1 << (precision - 1)
    h, w = x.shape
    above = np.full((h, w), half, np.int64)
    above[1:] = x[:-1]
    left = np.empty((h, w), np.int64)
    left[:, 1:] = x[:, :-1]
    left[:, 0] = 0  # unused: column 0 is predicted from above
    upleft = np.full((h, w), half, np.int64)
    upleft[1:, 1:] = x[:-1, :-1]
    pred = {
        1: lambda: left,
        2: lambda: above,
        3: lambda: upleft,
        4: lambda: left + above - upleft,
        5: lambda: left + ((above - upleft) >> 1),
        6: lambda: above + ((left - upleft) >> 1),
        7: lambda: (left + above) >> 1,
    }[predictor]().copy()
    pred[:, 0] = above[:, 0]
    return pred


def _code_lengths(freq):
    """Huffman code lengths (at most 16 bits) for symbol frequencies, as in JPEG Annex K.2:
    a reserved dummy symbol keeps the all-ones code unused."""
    freq = [int(f) for f in freq] + [1]
    n = len(freq)
    codesize = [0] * n
    others = [-1] * n
    live = [i for i in range(n) if freq[i] > 0]
    f = list(freq)
    while len(live) > 1:
        live.sort(key=lambda i: (f[i], -i))
        v1, v2 = live[0], live[1]  # the two least frequent
        f[v2] += f[v1]
        live.remove(v1)
        for v in (v2, v1):
            while True:
                codesize[v] += 1
                if others[v] < 0:
                    break
                v = others[v]
        v = v2
        while others[v] >= 0:
            v = others[v]
        others[v] = v1
    bits = [0] * 33
    for size in codesize:
        if size:
            bits[size] += 1
    for i in range(32, 16, -1):  # limit to 16 bits (Annex K.3)
        while bits[i] > 0:
            j = i - 2
            while bits[j] == 0:
                j -= 1
            bits[i] -= 2
            bits[i - 1] += 1
            bits[j + 1] += 2
            bits[j] -= 1
    i = 16
    while bits[i] == 0:
        i -= 1
    bits[i] -= 1  # drop the dummy symbol
    # HUFFVAL lists symbols by their unlimited code size; BITS then assigns the limited sizes.
    huffval = sorted((i for i in range(n - 1) if freq[i] > 0), key=lambda s: (codesize[s], s))
    return bits[1:17], huffval


def _canonical_codes(bits, huffval):
    codes, lengths = {}, {}
    code, k = 0, 0
    for size in range(1, 17):
        for _ in range(bits[size - 1]):
            codes[huffval[k]] = code
            lengths[huffval[k]] = size
            code += 1
            k += 1
        code <<= 1
    return codes, lengths


def _pack_bits(values, nbits):
    """Concatenate the low `nbits[i]` (<= 32) bits of `values[i]`, MSB first; pad with ones.

    Each code lands in at most 5 bytes; its bits never overlap another code's, so the bytes
    can be summed (bincount) instead of OR-ed, which keeps the whole thing vectorised."""
    nbits = nbits.astype(np.int64)
    ends = np.cumsum(nbits)
    total = int(ends[-1]) if len(ends) else 0
    nbytes = (total + 7) // 8
    pos = ends - nbits
    first = pos >> 3
    aligned = values.astype(np.uint64) << (40 - (pos & 7) - nbits).astype(np.uint64)
    acc = np.zeros(nbytes + 5, np.int64)
    for j in range(5):
        part = ((aligned >> np.uint64(32 - 8 * j)) & np.uint64(0xFF)).astype(np.float64)
        acc += np.bincount(first + j, weights=part, minlength=nbytes + 5).astype(np.int64)
    packed = acc[:nbytes].astype(np.uint8)
    if total % 8:
        packed[-1] |= (1 << (8 - total % 8)) - 1
    # Byte stuffing: every 0xFF in entropy-coded data is followed by 0x00.
    ff = np.flatnonzero(packed == 0xFF)
    if len(ff):
        packed = np.insert(packed, ff + 1, 0)
    return packed.tobytes()


def encode(image, predictor, precision, swap_header=True):
    """Encode `image` (lines, pixels_per_line) the way PVRG did for DDSM.

    With `swap_header`, the SOF3 header says width = lines and height = pixels_per_line and the
    encoder works in that geometry, as DDSM's files do. Returns the bytes of a bare stream
    (SOI, SOF3, DHT, SOS, data, EOI)."""
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"encode: expected a 2-D image, got shape {image.shape}")
    if not 1 <= predictor <= 7:
        raise ValueError(f"encode: predictor {predictor} out of range 1..7")
    if not 2 <= precision <= 16:
        raise ValueError(f"encode: precision {precision} out of range 2..16")
    if image.size and (int(image.min()) < 0 or int(image.max()) >> precision):
        raise ValueError(f"encode: samples outside 0..{(1 << precision) - 1}")
    lines, ppl = image.shape
    height, width = (ppl, lines) if swap_header else (lines, ppl)
    x = np.ascontiguousarray(image).reshape(height, width)
    diff = (x.astype(np.int64) - _pvrg_predictions(x, predictor, precision)) & 0xFFFF
    signed = np.where(diff >= 0x8000, diff - 0x10000, diff).ravel()
    mag = np.abs(signed)
    ssss = np.zeros(mag.shape, np.int64)
    nz = mag > 0
    ssss[nz] = np.floor(np.log2(mag[nz])).astype(np.int64) + 1
    ssss[signed == 0x8000] = 16
    extra = np.where(signed >= 0, signed, signed + (1 << ssss) - 1)
    extra = np.where(ssss == 16, 0, extra)  # category 16 carries no extra bits
    extra_bits = np.where(ssss == 16, 0, ssss)
    freq = np.bincount(ssss, minlength=17)
    bits, huffval = _code_lengths(freq)
    codes, lengths = _canonical_codes(bits, huffval)
    code_of = np.zeros(17, np.int64)
    len_of = np.zeros(17, np.int64)
    for sym in huffval:
        code_of[sym], len_of[sym] = codes[sym], lengths[sym]
    values = (code_of[ssss] << extra_bits) | (extra & ((1 << extra_bits) - 1))
    nbits = len_of[ssss] + extra_bits
    scan = _pack_bits(values, nbits)
    out = bytearray(b"\xff\xd8")
    out += b"\xff\xc3" + (11).to_bytes(2, "big") + bytes([precision])
    out += height.to_bytes(2, "big") + width.to_bytes(2, "big") + bytes([1, 1, 0x11, 0])
    dht = bytes([0x00]) + bytes(bits) + bytes(huffval)
    out += b"\xff\xc4" + (len(dht) + 2).to_bytes(2, "big") + dht
    out += b"\xff\xda" + (8).to_bytes(2, "big") + bytes([1, 1, 0x00, predictor, 0, 0])
    out += scan
    out += b"\xff\xd9"
    return bytes(out)


def check_file(path, shape=None, bits=None):
    """Cheap validity check of an .LJPEG file without decoding it: header, end-of-image
    marker, sample count against `shape` and precision against `bits`. Returns the header."""
    import os
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(65536)
        f.seek(max(0, size - 64))
        tail = f.read()
    header, scan_start = parse_header(head, path)
    if scan_start >= size or not tail.rstrip(b"\x00").endswith(b"\xff\xd9"):
        raise LJPEGError(f"{path}: truncated (no end-of-image marker after the scan; "
                         f"file is {size} bytes)")
    if shape is not None and header.height * header.width != shape[0] * shape[1]:
        raise LJPEGError(f"{path}: {header.width}x{header.height} samples in the header, expected "
                         f"{shape[0]} lines x {shape[1]} pixels per line")
    if bits is not None and header.precision != bits:
        raise LJPEGError(f"{path}: {header.precision}-bit samples, the .ics says {bits}")
    return header
