"""The original USF DDSM release: .ics case headers, PVRG .LJPEG images, .OVERLAY chain codes,
grey level to optical density, and walking a tree of case folders.

Format facts (and the traps) are in docs/formats.md, what each reader checks in
docs/errors.md; the LJPEG codec lives in ljpeg.py."""
import logging
import os
import re
import warnings
from dataclasses import dataclass, field

import numpy as np

from deepmammo.sources import ljpeg
from deepmammo.textfile import read_text

log = logging.getLogger(__name__)

VIEWS = ("LEFT_CC", "LEFT_MLO", "RIGHT_CC", "RIGHT_MLO")
LJPEGError = ljpeg.LJPEGError


class ICSError(ValueError):
    """A .ics file that cannot be parsed; the message names the file and line."""


class OverlayError(ValueError):
    """An .OVERLAY file that cannot be parsed; the message names the file and line."""


class OutlineClippedWarning(UserWarning):
    """An outline ran outside its image; the mask was clipped to the image."""


# ----------------------------------------------------------------------------- .ics

@dataclass
class ICSView:
    name: str
    lines: int
    pixels_per_line: int
    bits_per_pixel: int
    resolution: float
    has_overlay: bool

    @property
    def shape(self):
        return (self.lines, self.pixels_per_line)


@dataclass
class ICSCase:
    path: str
    name: str
    views: dict
    digitizer: str = ""
    patient_age: int = None
    density: int = None
    date_of_study: tuple = None
    date_digitized: tuple = None
    film_type: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def site(self):
        """Site letter A-D, the first letter of the case name."""
        return self.name[:1].upper()

    @property
    def scanner(self):
        return scanner_key(self.digitizer, self.site)


def _int_or_none(tokens, path, lineno, key):
    if not tokens:
        return None
    try:
        return int(tokens[0])
    except ValueError:
        raise ICSError(f"{path}:{lineno}: {key} value {tokens[0]!r} is not an integer") from None


def _date(tokens):
    nums = []
    for t in tokens:
        try:
            nums.append(int(t))
        except ValueError:
            return tuple(tokens) or None
    return tuple(nums) or None


def _parse_view(name, tokens, path, lineno):
    """`LINES 4696 PIXELS_PER_LINE 3024 BITS_PER_PIXEL 12 RESOLUTION 50 OVERLAY`."""
    values = {}
    i = 0
    while i < len(tokens) - 1:
        key = tokens[i]
        if key in ("LINES", "PIXELS_PER_LINE", "BITS_PER_PIXEL", "RESOLUTION"):
            values[key] = tokens[i + 1]
            i += 2
        else:
            i += 1
    missing = [k for k in ("LINES", "PIXELS_PER_LINE", "BITS_PER_PIXEL") if k not in values]
    if missing:
        raise ICSError(f"{path}:{lineno}: view {name} lacks {', '.join(missing)}")
    try:
        lines, ppl, bits = (int(values[k]) for k in ("LINES", "PIXELS_PER_LINE", "BITS_PER_PIXEL"))
        resolution = float(values.get("RESOLUTION", "nan"))
    except ValueError:
        raise ICSError(f"{path}:{lineno}: view {name} has a non-numeric size or depth") from None
    if lines <= 0 or ppl <= 0 or not 1 <= bits <= 16:
        raise ICSError(f"{path}:{lineno}: view {name} has an impossible size or depth "
                       f"({lines} x {ppl}, {bits} bits)")
    # Whole-word match: NON_OVERLAY contains OVERLAY.
    has_overlay = "OVERLAY" in tokens and "NON_OVERLAY" not in tokens
    return ICSView(name, lines, ppl, bits, resolution, has_overlay)


def parse_ics(text, path="<ics>"):
    """Parse the text of a .ics file."""
    views, fields = {}, {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        tokens = raw.split()
        if not tokens:
            continue  # real files begin with a line holding one space
        key, rest = tokens[0], tokens[1:]
        if key in VIEWS:
            views[key] = _parse_view(key, rest, path, lineno)
        elif key in ("SEQUENCE", "SELECTED"):
            continue  # marks where the view lines begin; nothing to read
        else:
            fields[key] = (lineno, rest)
    if not views:
        raise ICSError(f"{path}: no view lines (LEFT_CC ... RIGHT_MLO) found; not a DDSM .ics file?")

    def get(key):
        return fields.get(key, (0, []))

    name = " ".join(get("filename")[1]) or os.path.splitext(os.path.basename(path))[0]
    age_line, age = get("PATIENT_AGE")
    dens_line, dens = get("DENSITY")
    case = ICSCase(
        path=path,
        name=name,
        views=views,
        digitizer=" ".join(get("DIGITIZER")[1]),
        patient_age=_int_or_none(age, path, age_line, "PATIENT_AGE"),
        density=_int_or_none(dens, path, dens_line, "DENSITY"),
        date_of_study=_date(get("DATE_OF_STUDY")[1]),
        date_digitized=_date(get("DATE_DIGITIZED")[1]),
        film_type=" ".join(get("FILM_TYPE")[1]),
        extra={k: " ".join(v[1]) for k, v in fields.items()},
    )
    return case


def _read_text(path, what):
    """A DDSM text file (latin-1: the archive predates UTF-8), naming it when missing or when
    it is a folder."""
    return read_text(path, what, encoding="latin-1")


def read_ics(path):
    """Read a DDSM .ics case header (see ICSCase / ICSView)."""
    path = os.fspath(path)
    return parse_ics(_read_text(path, ".ics"), path)


# ----------------------------------------------------------------------------- scanners / OD

SCANNERS = {
    # key: (raw clip low, raw clip high, grey level -> optical density)
    "DBA": (4, 64064, lambda gl: (np.log10(gl) - 4.80662) / -1.07553),
    "HOWTEK-MGH": (0, 4006, lambda gl: 3.789 - 0.00094568 * gl),
    "LUMISYS": (61, 4097, lambda gl: (gl - 4096.99) / -1009.01),
    "HOWTEK-ISMD": (0, 4003, lambda gl: 3.96604095240593 - 0.00099055807612 * gl),
}


def scanner_key(digitizer, site):
    """Calibration key for a digitizer string and site letter ('' when unknown)."""
    d = (digitizer or "").upper()
    if d.startswith("DBA"):
        return "DBA"
    if d.startswith("LUMISYS"):
        return "LUMISYS"
    if d.startswith("HOWTEK"):
        return "HOWTEK-ISMD" if site.upper() == "D" else "HOWTEK-MGH"
    return ""


def optical_density(image, scanner, od_range=(0.05, 3.0)):
    """Grey levels to optical density with the published per-scanner calibration (float32).

    Raw values are clipped to the scanner's valid range first, the result to `od_range`."""
    if scanner not in SCANNERS:
        raise ValueError(f"no optical-density calibration for scanner {scanner!r}; "
                         f"known: {', '.join(SCANNERS)}")
    lo, hi, fn = SCANNERS[scanner]
    gl = np.clip(np.asarray(image, np.float64), lo, hi)  # DBA's lower bound keeps log10 finite
    od = fn(gl)
    if od_range is not None:
        od = np.clip(od, *od_range)
    return od.astype(np.float32)


# ----------------------------------------------------------------------------- .LJPEG

def read_ljpeg(path, shape):
    """Decode a DDSM .LJPEG file to a uint16 array of `shape` = (lines, pixels_per_line)."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: .LJPEG file not found") from None
    return ljpeg.decode(data, shape, source=path)


def write_ljpeg(path, image, predictor=1, bits=12):
    """Write `image` as a PVRG-style .LJPEG (swapped SOF3 header), atomically."""
    from deepmammo.atomic import write_bytes
    write_bytes(path, ljpeg.encode(image, predictor, bits, swap_header=True))


# ----------------------------------------------------------------------------- .OVERLAY

# Chain-code directions as (d_row, d_col); rows grow downwards.
CHAIN_STEPS = np.array([(-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1)])


@dataclass
class Abnormality:
    number: int
    lesion_types: list = field(default_factory=list)  # one dict per LESION_TYPE line
    assessment: int = None
    subtlety: int = None
    pathology: str = ""
    outlines: list = field(default_factory=list)
    outline_names: list = field(default_factory=list)
    declared_outlines: int = None

    def _first(self, lesion, key):
        for lt in self.lesion_types:
            if lt.get("LESION_TYPE") == lesion and lt.get(key):
                return lt[key]
        return ""

    @property
    def lesion_type(self):
        """The first lesion type (MASS or CALCIFICATION); see `kinds` for all of them."""
        return self.lesion_types[0].get("LESION_TYPE", "") if self.lesion_types else ""

    @property
    def kinds(self):
        return [lt.get("LESION_TYPE", "") for lt in self.lesion_types]

    @property
    def is_mass(self):
        return "MASS" in self.kinds

    @property
    def is_calcification(self):
        return "CALCIFICATION" in self.kinds

    @property
    def shape(self):
        return self._first("MASS", "SHAPE")

    @property
    def margins(self):
        return self._first("MASS", "MARGINS")

    @property
    def calc_type(self):
        return self._first("CALCIFICATION", "TYPE")

    @property
    def distribution(self):
        return self._first("CALCIFICATION", "DISTRIBUTION")

    @property
    def boundary(self):
        return self.outlines[0] if self.outlines else None


MAX_COORDINATE = 65535


def chain_to_outline(numbers, source="<chain>"):
    """Chain code -> (N, 2) int array of (row, col): start column and row first, then
    direction digits 0-7."""
    if len(numbers) < 2:
        raise OverlayError(f"{source}: chain code without a start point")
    col, row = numbers[0], numbers[1]
    # LJPEG image sides are 16-bit numbers: a start point beyond them is corrupt, and checking
    # here keeps numpy from overflowing on absurd values.
    if not (0 <= col <= MAX_COORDINATE and 0 <= row <= MAX_COORDINATE):
        raise OverlayError(f"{source}: chain-code start point (column {col}, row {row}) is "
                           f"outside 0..{MAX_COORDINATE}")
    bad = next((v for v in numbers[2:] if not 0 <= v <= 7), None)
    if bad is not None:
        raise OverlayError(f"{source}: chain-code direction {bad} is not 0-7")
    steps = np.asarray(numbers[2:], dtype=np.int64)
    moves = CHAIN_STEPS[steps] if len(steps) else np.zeros((0, 2), np.int64)
    points = np.concatenate([[[row, col]], moves]).cumsum(axis=0)
    return points.astype(np.int64)


def outline_to_chain(outline):
    """(N, 2) (row, col) 8-connected outline -> chain-code numbers (col, row, digits...)."""
    outline = np.asarray(outline, np.int64)
    d = np.diff(outline, axis=0)
    lookup = {tuple(s): i for i, s in enumerate(CHAIN_STEPS.tolist())}
    try:
        digits = [lookup[(int(a), int(b))] for a, b in d]
    except KeyError:
        raise ValueError("outline is not 8-connected (a step larger than one pixel)") from None
    return [int(outline[0, 1]), int(outline[0, 0])] + digits


def _extend_chain(chain, tokens):
    """Add chain-code tokens to `chain`; True when '#' ended it."""
    for t in tokens:
        if t == "#":
            return True
        chain.append(t)
    return False


def _chain_outline(chain, where):
    try:
        numbers = [int(v) for v in chain]
    except ValueError:
        bad = next(v for v in chain if not v.lstrip("-").isdigit())
        raise OverlayError(f"{where}: non-numeric chain-code token {bad!r}") from None
    return chain_to_outline(numbers, where)


def parse_overlay(text, path="<overlay>"):
    """Parse the text of an .OVERLAY file into a list of Abnormality."""
    abns, cur = [], None
    pending_name = None  # BOUNDARY / CORE line waiting for its chain code
    chain, chain_line = None, 0
    for lineno, raw in enumerate(text.splitlines(), 1):
        tokens = raw.split()
        if not tokens:
            continue
        where = f"{path}:{lineno}"
        if pending_name is not None:
            if chain is None:
                chain, chain_line = [], lineno
            if _extend_chain(chain, tokens):
                cur.outlines.append(_chain_outline(chain, f"{path}:{chain_line}"))
                cur.outline_names.append(pending_name)
                chain, pending_name = None, None
            continue
        key = tokens[0]
        if key == "TOTAL_ABNORMALITIES":
            continue  # some counts are wrong: trust what is there
        if key == "ABNORMALITY":
            try:
                cur = Abnormality(int(tokens[1]))
            except (IndexError, ValueError):
                raise OverlayError(f"{where}: ABNORMALITY needs a number") from None
            abns.append(cur)
            continue
        if cur is None:
            raise OverlayError(f"{where}: {key!r} before the first ABNORMALITY line")
        if key == "LESION_TYPE":
            pairs = {}
            # Values are single tokens: KEY VALUE KEY VALUE ...
            for i in range(0, len(tokens) - 1, 2):
                pairs[tokens[i]] = tokens[i + 1]
            cur.lesion_types.append(pairs)
        elif key in ("ASSESSMENT", "SUBTLETY", "TOTAL_OUTLINES"):
            try:
                value = int(tokens[1])
            except (IndexError, ValueError):
                raise OverlayError(f"{where}: {key} needs an integer") from None
            setattr(cur, {"TOTAL_OUTLINES": "declared_outlines"}.get(key, key.lower()), value)
        elif key == "PATHOLOGY":
            cur.pathology = tokens[1] if len(tokens) > 1 else ""
        elif key in ("BOUNDARY", "CORE") or re.fullmatch(r"CORE\d*", key):
            pending_name, chain, chain_line = key, [], lineno
            if _extend_chain(chain, tokens[1:]):  # chain code on the same line
                cur.outlines.append(_chain_outline(chain, where))
                cur.outline_names.append(pending_name)
                chain, pending_name = None, None
            elif not chain:
                chain = None
        else:
            log.debug("%s: ignoring unknown key %s", where, key)
    if pending_name is not None:
        raise OverlayError(f"{path}: chain code not terminated by '#' (file truncated?)")
    if not abns:
        raise OverlayError(f"{path}: no ABNORMALITY found")
    for a in abns:
        if not a.outlines:
            raise OverlayError(f"{path}: abnormality {a.number} has no outline")
        if not a.lesion_types:
            raise OverlayError(f"{path}: abnormality {a.number} has no LESION_TYPE")
    return abns


def read_overlay(path):
    """Read a DDSM .OVERLAY file: list of Abnormality (see its properties)."""
    path = os.fspath(path)
    return parse_overlay(_read_text(path, ".OVERLAY"), path)


def outline_mask(outline, shape):
    """Fill an (N, 2) (row, col) outline into a bool mask of `shape`.

    Outline pixels belong to the mask. Points outside the image are clipped (the polygon is
    filled whole, then cut to the image) and an OutlineClippedWarning tells the caller."""
    from PIL import Image, ImageDraw
    outline = np.asarray(outline, np.int64)
    if outline.ndim != 2 or outline.shape[1] != 2 or len(outline) == 0:
        raise ValueError(f"outline must be a non-empty (N, 2) array, got shape {outline.shape}")
    rows, cols = int(shape[0]), int(shape[1])
    outside = ((outline[:, 0] < 0) | (outline[:, 0] >= rows)
               | (outline[:, 1] < 0) | (outline[:, 1] >= cols))
    if outside.any():
        warnings.warn(OutlineClippedWarning(
            f"{int(outside.sum())} of {len(outline)} outline points lie outside the "
            f"{rows}x{cols} image; the mask is clipped"), stacklevel=2)
    # Draw only within the outline's bounding box (cut to the image) to stay cheap on
    # full-size images.
    r0, c0 = max(int(outline[:, 0].min()), 0), max(int(outline[:, 1].min()), 0)
    r1, c1 = min(int(outline[:, 0].max()) + 1, rows), min(int(outline[:, 1].max()) + 1, cols)
    mask = np.zeros((rows, cols), bool)
    if r1 <= r0 or c1 <= c0:
        return mask
    canvas = Image.new("1", (c1 - c0, r1 - r0), 0)
    points = [(int(c) - c0, int(r) - r0) for r, c in outline]
    draw = ImageDraw.Draw(canvas)
    if len(points) > 2:
        draw.polygon(points, fill=1, outline=1)
    else:
        draw.line(points + points[:1], fill=1)
    mask[r0:r1, c0:c1] = np.array(canvas, dtype=bool)
    return mask


# ----------------------------------------------------------------------------- tree

@dataclass
class DDSMCase:
    """One case folder: its .ics and, per view, the .LJPEG and .OVERLAY paths found."""
    ics_path: str          # None for the view files of a case folder without an .ics
    ljpegs: dict
    overlays: dict
    notes: list = field(default_factory=list)
    orphans: list = field(default_factory=list)   # files of a case without an .ics
    orphan_folder: str = ""

    @property
    def folder(self):
        return self.orphan_folder if self.ics_path is None else os.path.dirname(self.ics_path)


_VIEW_FILE = re.compile(r"^(?P<case>.+?)\.(?P<view>(?:LEFT|RIGHT)_(?:CC|MLO))\.(?P<ext>LJPEG|OVERLAY)$",
                        re.IGNORECASE)


def _case_key(name):
    """Case names are spelled with hyphens in .ics and underscores in image file names."""
    return re.sub(r"[-_]", "_", name).upper()


def walk_ddsm(root):
    """Yield DDSMCase for every .ics file below `root`, in sorted order.

    Files are matched to cases by name, across the whole tree: an .OVERLAY that sits in the
    wrong case folder (a known DDSM defect) is still found, and a note says so."""
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{root}: DDSM folder not found")
    ics_files, view_files = [], {}
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        # A folder named like an .ics is still that case's .ics: reading it reports the case.
        ics_files += [os.path.join(folder, d) for d in dirs if d.lower().endswith(".ics")]
        for name in sorted(files):
            full = os.path.join(folder, name)
            if name.lower().endswith(".ics"):
                ics_files.append(full)
                continue
            m = _VIEW_FILE.match(name)
            if m:
                key = (_case_key(m["case"]), m["view"].upper(), m["ext"].upper())
                view_files.setdefault(key, []).append(full)
    for ics_path in ics_files:
        stem = _case_key(os.path.splitext(os.path.basename(ics_path))[0])
        folder = os.path.dirname(ics_path)
        ljpegs, overlays, notes = {}, {}, []
        for view in VIEWS:
            for ext, into in (("LJPEG", ljpegs), ("OVERLAY", overlays)):
                found = view_files.get((stem, view, ext), [])
                here = [p for p in found if os.path.dirname(p) == folder]
                if here:
                    into[view] = here[0]
                elif found:
                    into[view] = found[0]
                    notes.append(f"{os.path.basename(found[0])} found outside its case folder, "
                                 f"in {os.path.dirname(found[0])}")
        yield DDSMCase(ics_path, ljpegs, overlays, notes)
    # View files that no .ics claims (the case's .ics is missing): one entry per folder, so
    # that the ingest reports them instead of losing the case unseen.
    claimed = {_case_key(os.path.splitext(os.path.basename(p))[0]) for p in ics_files}
    by_folder = {}
    for (case_key, _view, _ext), paths in sorted(view_files.items()):
        if case_key not in claimed:
            for p in paths:
                by_folder.setdefault(os.path.dirname(p), []).append(p)
    for folder, paths in sorted(by_folder.items()):
        yield DDSMCase(None, {}, {}, orphans=sorted(paths), orphan_folder=folder)
