"""Synthetic mammograms and masses for the synthetic archives (synth.py writes the formats).

The class signal is the one radiologists use: benign masses are round or oval with sharp
(circumscribed) margins; malignant ones irregular, with spiculated or ill-defined margins.
About one lesion in eight looks exactly like the other class, and one in six borrows part of
the other class's look (lobulated or microlobulated benign masses, oval ill-defined malignant
ones), so the task is learnable but not trivial.
Contrast and size are drawn from the same distributions for both classes."""
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from deepmammo.sources.ddsm import outline_mask


@dataclass
class MassSpec:
    """One lesion, shared by the two views of its breast."""
    malignant: bool
    lesion_type: str          # MASS or CALCIFICATION
    shape: str                # DDSM vocabulary: ROUND, OVAL, LOBULATED, IRREGULAR
    margins: str              # CIRCUMSCRIBED, OBSCURED, MICROLOBULATED, ILL_DEFINED, SPICULATED
    pathology: str
    assessment: int
    subtlety: int
    radius_frac: float        # mean radius as a fraction of the image height
    aspect: float             # ellipse axis ratio
    harmonics: list           # (k, amplitude, phase) radial perturbations
    edge_blur: float          # margin sharpness, in pixels at 600 rows
    spicules: int
    contrast: float
    position: dict = field(default_factory=dict)  # view -> (row_frac, col_frac_from_wall)
    angle: dict = field(default_factory=dict)     # view -> rotation (radians)
    calc_type: str = ""
    calc_distribution: str = ""


def draw_mass(rng, malignant, with_calc=False):
    """Draw the descriptors and geometry of one lesion."""
    u = rng.random()
    # About one in eight lesions looks exactly like the other class (no image can tell them
    # apart), and one in six borrows part of the other class's look: learnable, not trivial.
    look = (not malignant) if u < 0.12 else malignant
    borrow = 0.12 <= u < 0.3
    if with_calc:
        return MassSpec(malignant, "CALCIFICATION", "", "", _pathology(rng, malignant),
                        int(rng.integers(3, 6)) if malignant else int(rng.integers(2, 4)),
                        int(rng.integers(1, 6)), float(rng.uniform(0.03, 0.05)), 1.0, [],
                        0.5, 0, float(rng.uniform(0.10, 0.18)),
                        calc_type="PLEOMORPHIC" if malignant else "PUNCTATE",
                        calc_distribution="CLUSTERED")
    if look and not borrow:
        shape, margins = "IRREGULAR", str(rng.choice(["SPICULATED", "SPICULATED", "ILL_DEFINED"]))
        harmonics = _harmonics(rng, 0.14, 0.28)
        blur = 1.8 if margins == "ILL_DEFINED" else 1.0
        spicules = int(rng.integers(10, 18)) if margins == "SPICULATED" else 0
    elif look:
        shape, margins = "OVAL", "ILL_DEFINED"
        harmonics = _harmonics(rng, 0.02, 0.06)
        blur, spicules = 2.2, 0
    elif not borrow:
        shape, margins = str(rng.choice(["ROUND", "OVAL"])), "CIRCUMSCRIBED"
        harmonics = _harmonics(rng, 0.0, 0.02)
        blur, spicules = 0.4, 0
    else:
        shape, margins = "LOBULATED", str(rng.choice(["MICROLOBULATED", "OBSCURED"]))
        harmonics = _harmonics(rng, 0.06, 0.14, ks=(3, 4, 5))
        blur, spicules = 1.0, int(rng.integers(0, 3))
    aspect = 1.0 if shape == "ROUND" else float(rng.uniform(1.2, 1.7))
    return MassSpec(
        malignant, "MASS", shape, margins, _pathology(rng, malignant),
        int(rng.integers(4, 6)) if malignant else int(rng.integers(2, 5)),
        int(rng.integers(1, 6)), float(rng.uniform(0.04, 0.075)), aspect, harmonics, blur,
        spicules, float(rng.uniform(0.12, 0.26)))


def _pathology(rng, malignant):
    if malignant:
        return "MALIGNANT"
    return "BENIGN_WITHOUT_CALLBACK" if rng.random() < 0.2 else "BENIGN"


def _harmonics(rng, lo, hi, ks=(3, 4, 5, 6, 7, 8)):
    n = min(int(rng.integers(2, 5)), len(ks))
    return [(int(k), float(rng.uniform(lo, hi)) / np.sqrt(n / 2), float(rng.uniform(0, 2 * np.pi)))
            for k in rng.choice(ks, size=n, replace=False)]


def outline_points(spec, centre, radius, angle):
    """Closed 8-connected (row, col) outline of the mass body: a star-shaped radius function
    r(theta) sampled densely and joined by single-pixel steps (a valid chain code)."""
    n = max(64, int(8 * radius))
    theta = np.linspace(0, 2 * np.pi, n, endpoint=False)
    a, b = radius * np.sqrt(spec.aspect), radius / np.sqrt(spec.aspect)
    r = a * b / np.sqrt((b * np.cos(theta)) ** 2 + (a * np.sin(theta)) ** 2)
    for k, amp, phase in spec.harmonics:
        r = r * (1 + amp * np.cos(k * theta + phase))
    r = np.maximum(r, 1.5)
    rows = np.rint(centre[0] + r * np.sin(theta + angle)).astype(np.int64)
    cols = np.rint(centre[1] + r * np.cos(theta + angle)).astype(np.int64)
    pts = np.stack([rows, cols], axis=1)
    pts = np.concatenate([pts, pts[:1]])
    return _connect(pts)


def _connect(points):
    """Join successive points with 8-connected single steps (no zero steps)."""
    out = [points[0]]
    for target in points[1:]:
        cur = out[-1]
        while cur[0] != target[0] or cur[1] != target[1]:
            cur = cur + np.sign(target - cur)
            out.append(cur)
    return np.array(out, np.int64)


def breast_background(rng, rows, cols, side, view, scale):
    """A breast on a dark film background (float, 0..1), with a pectoral muscle in MLO.
    Returns (image, breast mask). The chest wall is on the left for LEFT, right for RIGHT."""
    r = np.arange(rows)[:, None]
    c = np.arange(cols)[None, :]
    depth = cols * rng.uniform(0.78, 0.92)
    half_height = rows * rng.uniform(0.40, 0.47)
    centre = rows * rng.uniform(0.47, 0.53)
    inside = ((r - centre) / half_height) ** 2 + (c / depth) ** 2 <= 1.0
    # Tissue: smooth glandular density plus finer texture.
    coarse = _smooth_noise(rng, rows, cols, 18 * scale)
    fine = _smooth_noise(rng, rows, cols, 2.5 * scale)
    falloff = np.sqrt(np.clip(1 - (c / depth) ** 2 - ((r - centre) / half_height) ** 2, 0, 1))
    tissue = 0.32 + 0.18 * falloff + 0.06 * coarse + 0.025 * fine
    image = np.where(inside, tissue, 0.05 + 0.01 * rng.standard_normal((rows, cols)))
    if view == "MLO":
        muscle = c < (cols * rng.uniform(0.25, 0.35)) * (1 - r / (rows * rng.uniform(0.4, 0.55)))
        image = np.where(muscle & inside, image + 0.18, image)
    image = ndimage.gaussian_filter(image, 0.8 * scale)
    if side == "RIGHT":
        image, inside = image[:, ::-1], inside[:, ::-1]
    return image, inside


def _smooth_noise(rng, rows, cols, sigma):
    """Unit-variance Gaussian-smoothed noise; large sigmas are made at low resolution and
    zoomed up (the same look, a fraction of the cost)."""
    step = max(1, int(sigma // 3))
    small = (-(-rows // step) + 1, -(-cols // step) + 1)
    noise = ndimage.gaussian_filter(rng.standard_normal(small), sigma / step)
    if step > 1:
        noise = ndimage.zoom(noise, step, order=1)
    noise = noise[:rows, :cols]
    return noise / (noise.std() + 1e-9)


def place(spec, view, side, rows, cols):
    """Centre (row, col) of a lesion in one view, from its stored fractions."""
    rf, cf = spec.position[view]
    col = cf * cols
    if side == "RIGHT":
        col = cols - 1 - col
    return rf * rows, col


def render_lesion(rng, image, spec, outline, shape, scale):
    """Add the lesion to `image` in place; return its mask (the filled outline). The work is
    done in a window around the outline (spicules included), not the whole image."""
    mask = outline_mask(outline, shape)
    radius = np.sqrt(((outline - outline.mean(axis=0)) ** 2).sum(axis=1)).mean()
    pad = int(2.6 * radius + 8 * max(spec.edge_blur, 1) * scale) + 4
    r0, c0 = np.maximum(outline.min(axis=0) - pad, 0)
    r1, c1 = np.minimum(outline.max(axis=0) + pad + 1, shape)
    win = (slice(r0, r1), slice(c0, c1))
    m = mask[win]
    if spec.lesion_type == "CALCIFICATION":
        # Small bright specks inside the outlined cluster.
        rr, cc = np.nonzero(m)
        n = max(5, len(rr) // 60)
        pick = rng.choice(len(rr), size=min(n, len(rr)), replace=False)
        specks = np.zeros(m.shape)
        specks[rr[pick], cc[pick]] = 1.0
        image[win] += spec.contrast * 3 * ndimage.gaussian_filter(specks, 0.7 * scale) / 0.3
        return mask
    body = ndimage.gaussian_filter(m.astype(np.float64), max(spec.edge_blur * scale, 0.3))
    # Denser centre, like a real mass.
    dist = ndimage.distance_transform_edt(m)
    core = dist / (dist.max() + 1e-9)
    body = body * (0.75 + 0.25 * ndimage.gaussian_filter(core, 1.0))
    if spec.spicules:
        body = np.maximum(body, _spicules(rng, spec, outline - [r0, c0], m.shape, scale))
    image[win] += spec.contrast * body
    return mask


def _spicules(rng, spec, outline, shape, scale):
    from PIL import Image, ImageDraw
    centre = outline.mean(axis=0)
    radius = np.sqrt(((outline - centre) ** 2).sum(axis=1)).mean()
    canvas = Image.new("F", (shape[1], shape[0]), 0.0)
    draw = ImageDraw.Draw(canvas)
    for _ in range(spec.spicules):
        t = rng.uniform(0, 2 * np.pi)
        length = radius * rng.uniform(1.5, 2.6)
        end = centre + length * np.array([np.sin(t), np.cos(t)])
        start = centre + 0.5 * radius * np.array([np.sin(t), np.cos(t)])
        draw.line([(start[1], start[0]), (end[1], end[0])], fill=float(rng.uniform(0.3, 0.6)),
                  width=max(1, int(round(1.6 * scale))))
    return ndimage.gaussian_filter(np.asarray(canvas, np.float64), 0.8 * scale)


def to_bits(image, bits, rng):
    """Float image (0..~1) to integers of `bits` depth, with a little film grain."""
    top = (1 << bits) - 1
    noisy = image + 0.006 * rng.standard_normal(image.shape)
    return np.clip(np.rint(noisy * 0.9 * top), 0, top).astype(np.uint16 if bits > 8 else np.uint8)
