"""A cheap, deterministic generator of fundus-like images with graded DR lesions.

It is the embedded default when no real retinopathy data is present, so every command
runs end to end on a fresh checkout. The images are built to be learnable but not
trivially so:

- anatomy: an orange-red disc on black with vignetting and choroidal texture, a bright
  optic disc on the nasal side (mirrored between left and right eyes), a darker macula,
  and vessel arcades leaving the optic disc;
- lesions whose number grows with the grade: microaneurysms (tiny dark-red dots) from
  grade 1, haemorrhages (dark-red blobs) and yellow hard exudates from grade 2, cotton-wool
  spots from grade 3, fine new vessels near the optic disc at grade 4;
- nuisance that does not depend on the grade: rotation, fundus size and position, brightness,
  gamma, colour tint per acquisition site, dust spots, light reflexes and sensor noise.

Grades follow roughly the EyePACS mix (most images grade 0; rare grades slightly enriched
so that even a few hundred images hold every grade), and the two eyes of a patient have
the same or neighbouring grades, as in real screening data.

Everything is computed in a canonical eye frame (right eye, optic disc at ``u > 0``) on a
coordinate grid that is rotated, shifted and mirrored per image, so the rendering code is
vectorised over a chunk of images with no per-pixel Python loops.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["GRADE_MIX", "SITES", "make_synthetic_fundus", "fundus_sites"]

# Per-image grade proportions: EyePACS is 0.738/0.076/0.149/0.021/0.016 (grades 0..4);
# grades 3 and 4 are enriched so that small synthetic sets still have them in every split.
GRADE_MIX = (0.70, 0.08, 0.15, 0.04, 0.03)

# Acquisition sites: each tints its images (camera/illumination), which is nuisance for
# the classifier and a natural grouping for non-IID partitions.
SITES = ("site-a", "site-b", "site-c")
_SITE_TINT = np.array([[1.00, 1.00, 1.00], [1.06, 0.94, 0.90], [0.92, 1.04, 1.12]], dtype=np.float32)

# Colours (RGB in [0, 1]) that spots blend towards.
_DARK_RED = np.array([0.35, 0.04, 0.03], dtype=np.float32)
_YELLOW = np.array([0.98, 0.86, 0.30], dtype=np.float32)
_PALE = np.array([0.95, 0.85, 0.75], dtype=np.float32)
_DRUSEN = np.array([0.90, 0.75, 0.45], dtype=np.float32)
_DUST = np.array([0.30, 0.30, 0.30], dtype=np.float32)


@dataclass(frozen=True)
class _Spots:
    """One kind of round spot: expected count per grade 0..4 (Poisson, or clustered:
    present in some images only, then several), size range (sigma, in units of the image
    half-width), opacity and colour."""

    per_grade: tuple[float, float, float, float, float]
    sigma: tuple[float, float]
    opacity: float
    colour: np.ndarray
    clustered: bool = False


# Neighbouring grades overlap in lesion counts and lesions are faint, so the grade is
# learnable from the images but not at a glance (a few stray microaneurysms even in grade
# 0, as graders miss some).
_LESIONS = {
    "microaneurysms": _Spots((0.3, 3.0, 6.0, 10.0, 12.0), (0.006, 0.011), 0.6, _DARK_RED),
    "haemorrhages": _Spots((0.1, 0.5, 4.0, 8.0, 10.0), (0.02, 0.045), 0.7, _DARK_RED),
    "exudates": _Spots((0.0, 0.3, 4.0, 7.0, 8.0), (0.012, 0.025), 0.75, _YELLOW, clustered=True),
    "cotton_wool": _Spots((0.0, 0.0, 0.5, 2.0, 2.0), (0.02, 0.035), 0.5, _PALE),
}
# The same for every grade: look-alikes so that "any spot" is not a shortcut to the label.
_LOOKALIKES = {
    "drusen": _Spots((1.2,) * 5, (0.006, 0.012), 0.35, _DRUSEN),
    "dust": _Spots((0.5,) * 5, (0.02, 0.04), 0.35, _DUST),
    "reflex": _Spots((0.9,) * 5, (0.01, 0.03), 0.3, _PALE),
}
# Fine new vessels at the optic disc (proliferative DR), expected number per grade.
_NEW_VESSELS = np.array([0.0, 0.0, 0.0, 0.3, 3.0])

# Images rendered together: bounds the (chunk, 3, H, W) float32 temporaries to ~100 MB.
_CHUNK_ELEMENTS = 1 << 23


def make_synthetic_fundus(n: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Generate ``n`` fundus-like RGB images with DR grades.

    Images ``2p`` and ``2p + 1`` are the left and right eye of patient ``p`` (an odd ``n``
    leaves the last patient with one eye).

    Args:
        n: number of images.
        size: height and width in pixels.
        seed: the same seed gives byte-identical output.

    Returns:
        ``(images, grades, patients)``: uint8 ``(n, 3, size, size)``, int64 ``(n,)`` grades
        0-4, and the patient id of each image (e.g. ``"synth0007"``).
    """
    if n < 0 or size < 8:
        raise ValueError(f"need n >= 0 and size >= 8, got n={n}, size={size}")
    rng = np.random.default_rng(seed)
    grades = _patient_paired_grades(n, rng)
    patients = [f"synth{i // 2:04d}" for i in range(n)]
    return torch.from_numpy(_render(grades, size, seed)), torch.from_numpy(grades), patients


def fundus_sites(patients: list[str]) -> list[str]:
    """The acquisition site of each synthetic patient id (used for its colour tint).

    Args:
        patients: ids as returned by :func:`make_synthetic_fundus`.
    """
    return [SITES[int(p.removeprefix("synth")) % len(SITES)] for p in patients]


def _patient_paired_grades(n: int, rng: np.random.Generator) -> np.ndarray:
    """Per-image grades with exactly the GRADE_MIX proportions (largest remainder),
    paired so that the two eyes of a patient have the same or neighbouring grades."""
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    quota = np.asarray(GRADE_MIX) * n
    counts = np.floor(quota).astype(int)
    counts[np.argsort(-(quota - counts), kind="stable")[: n - counts.sum()]] += 1
    grades = np.repeat(np.arange(len(GRADE_MIX)), counts)
    # Sorting by a noisy grade then pairing neighbours correlates the eyes of a patient
    # without making them identical.
    order = np.argsort(grades + rng.normal(0.0, 0.6, n), kind="stable")
    paired = grades[order]
    pairs = [paired[i : i + 2] for i in range(0, n - n % 2, 2)]
    pairs = [pairs[i] for i in rng.permutation(len(pairs))] + ([paired[-1:]] if n % 2 else [])
    out = np.concatenate([p if rng.random() < 0.5 else p[::-1] for p in pairs])
    return out.astype(np.int64)


def _render(grades: np.ndarray, size: int, seed: int) -> np.ndarray:
    """uint8 images for the given grades (image ``i`` is an eye of patient ``i // 2``).

    Anatomy, look-alikes and acquisition come from one random stream per chunk and
    lesions from another, so the same ``seed`` renders the same eyes whatever the grades,
    differing only in their lesions (which is what the tests compare).
    """
    n = len(grades)
    sites = np.arange(n) // 2 % len(SITES)  # matches fundus_sites()
    left = np.arange(n) % 2 == 0
    images = np.empty((n, 3, size, size), dtype=np.uint8)
    chunk = max(1, _CHUNK_ELEMENTS // (3 * size * size))
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        # Generators derived from (seed, start): chunks do not depend on each other.
        anatomy, lesions = np.random.default_rng([seed, start, 0]), np.random.default_rng([seed, start, 1])
        images[start:stop] = _render_chunk(grades[start:stop], left[start:stop], sites[start:stop], size, anatomy, lesions)
    return images


def _render_chunk(
    grades: np.ndarray, left: np.ndarray, sites: np.ndarray, size: int, rng: np.random.Generator, lesion_rng: np.random.Generator
) -> np.ndarray:
    b = len(grades)
    frame = _EyeFrame(b, left, size, rng)
    u, v, r = frame.u, frame.v, np.sqrt(frame.u**2 + frame.v**2)
    radius = _uniform(rng, 0.84, 0.96, (b, 1, 1))
    disc_u = _uniform(rng, 0.34, 0.42, (b, 1, 1))
    disc_v = _uniform(rng, -0.06, 0.06, (b, 1, 1))
    disc_r = _uniform(rng, 0.10, 0.13, (b, 1, 1))
    # Polar coordinates around the optic disc, shared by every vessel of the image.
    rho = np.sqrt((u - disc_u) ** 2 + (v - disc_v) ** 2)
    phi = np.arctan2(v - disc_v, u - disc_u)

    img = _background(u, v, r, radius, rng)
    img = _macula(img, u, v, disc_u, rng)
    img = _vessels(img, rho, phi, disc_r, frame.pixel, rng, rng.integers(6, 10, b), width=(0.012, 0.022), wiggle=0.0)
    img = _optic_disc(img, u, v, disc_u, disc_v, disc_r, frame.pixel)

    # Lesions anywhere on the posterior pole; like real ones they may overlap vessels.
    for spots, source in [(s, lesion_rng) for s in _LESIONS.values()] + [(s, rng) for s in _LOOKALIKES.values()]:
        mean = np.asarray(spots.per_grade)[grades]
        counts = _clustered(source, mean) if spots.clustered else source.poisson(mean)
        img = frame.blobs(img, radius, counts, spots, source)
    new_vessels = lesion_rng.poisson(_NEW_VESSELS[grades])
    img = _vessels(img, rho, phi, disc_r, frame.pixel, lesion_rng, new_vessels, width=(0.005, 0.008), wiggle=1.0)

    img = img * _ramp((radius - r) / (1.5 * frame.pixel))[:, None]
    img = _acquisition(img, sites, rng)
    return np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)


class _EyeFrame:
    """Per-image canonical coordinates (u, v) on the pixel grid: rotated, shifted, and
    mirrored for left eyes, plus a renderer for round spots in the same geometry."""

    def __init__(self, b: int, left: np.ndarray, size: int, rng: np.random.Generator):
        axis = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0
        y, x = np.meshgrid(axis, axis, indexing="ij")
        theta = np.deg2rad(_uniform(rng, -25.0, 25.0, (b, 1, 1)))
        self.shift = _uniform(rng, -0.04, 0.04, (b, 2))
        xs, ys = x[None] - self.shift[:, 0, None, None], y[None] - self.shift[:, 1, None, None]
        mirror = np.where(left, -1.0, 1.0).astype(np.float32)[:, None, None]
        self.u = (np.cos(theta) * xs + np.sin(theta) * ys) * mirror
        self.v = -np.sin(theta) * xs + np.cos(theta) * ys
        self.size = size
        self.pixel = 2.0 / size  # one pixel in normalised units

    def blobs(self, img: np.ndarray, radius: np.ndarray, counts: np.ndarray, spots: _Spots, rng: np.random.Generator) -> np.ndarray:
        """Blend ``counts[i]`` Gaussian spots of one kind into image ``i``.

        Blobs are rendered in small separable patches and scattered with ``bincount``,
        so the cost grows with the number of blobs, not with blobs x pixels. Their
        positions are rotation-symmetric about the fundus centre, so they can be drawn
        directly in image coordinates.
        """
        b, size = len(counts), self.size
        sigma, opacity, colour = spots.sigma, spots.opacity, spots.colour
        total = int(counts.sum())
        if total == 0:
            return img
        owner = np.repeat(np.arange(b), counts)
        rad = radius[owner, 0, 0] * 0.8 * np.sqrt(rng.uniform(0, 1, total))  # area-uniform, posterior pole
        ang = rng.uniform(0, 2 * np.pi, total)
        half_size = size / 2.0
        cx = (self.shift[owner, 0] + rad * np.cos(ang) + 1.0) * half_size - 0.5
        cy = (self.shift[owner, 1] + rad * np.sin(ang) + 1.0) * half_size - 0.5
        s = np.maximum(rng.uniform(sigma[0], sigma[1], total) * half_size, 0.6)  # never below ~a pixel
        reach = int(np.ceil(3.0 * s.max()))
        offsets = np.arange(-reach, reach + 1)
        ix = np.floor(cx).astype(np.int64)[:, None] + offsets
        iy = np.floor(cy).astype(np.int64)[:, None] + offsets
        gx = np.exp(-((ix - cx[:, None]) ** 2) / (2 * s[:, None] ** 2)) * ((ix >= 0) & (ix < size))
        gy = np.exp(-((iy - cy[:, None]) ** 2) / (2 * s[:, None] ** 2)) * ((iy >= 0) & (iy < size))
        weight = gy[:, :, None] * gx[:, None, :]
        flat = owner[:, None, None] * size * size + np.clip(iy, 0, size - 1)[:, :, None] * size + np.clip(ix, 0, size - 1)[:, None, :]
        mass = np.bincount(flat.ravel(), weights=weight.ravel(), minlength=b * size * size).reshape(b, 1, size, size)
        alpha = (opacity * np.minimum(mass, 1.0)).astype(np.float32)
        return img * (1 - alpha) + colour[None, :, None, None] * alpha


def _background(u: np.ndarray, v: np.ndarray, r: np.ndarray, radius: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    b = u.shape[0]
    base = np.stack([_uniform(rng, 0.68, 0.86, b), _uniform(rng, 0.28, 0.40, b), _uniform(rng, 0.08, 0.18, b)], axis=1)
    vignette = 1.0 - 0.45 * (r / radius) ** 2
    # Low-frequency choroidal texture: a few random plane waves.
    texture = np.zeros_like(u)
    for _ in range(3):
        freq = _uniform(rng, 3.0, 9.0, (b, 1, 1))
        angle = _uniform(rng, 0.0, np.pi, (b, 1, 1))
        phase = _uniform(rng, 0.0, 2 * np.pi, (b, 1, 1))
        texture += np.cos(freq * (np.cos(angle) * u + np.sin(angle) * v) + phase)
    shade = vignette * (1.0 + 0.03 * texture)
    return base[:, :, None, None] * shade[:, None]


def _macula(img: np.ndarray, u: np.ndarray, v: np.ndarray, disc_u: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    b = u.shape[0]
    centre_u = disc_u - _uniform(rng, 0.45, 0.52, (b, 1, 1))
    depth = _uniform(rng, 0.15, 0.3, (b, 1, 1))
    dark = 1.0 - depth * np.exp(-((u - centre_u) ** 2 + v**2) * np.float32(1 / (2 * 0.09**2)))
    return img * dark[:, None]


def _optic_disc(
    img: np.ndarray, u: np.ndarray, v: np.ndarray, disc_u: np.ndarray, disc_v: np.ndarray, disc_r: np.ndarray, pixel: float
) -> np.ndarray:
    d = np.sqrt((u - disc_u) ** 2 + ((v - disc_v) / np.float32(1.1)) ** 2)
    disc = 0.85 * _ramp((disc_r - d) / (1.5 * pixel + 0.02))[:, None]
    cup = np.exp(-(d**2) / (2 * (0.45 * disc_r) ** 2))[:, None]
    colour = np.array([1.0, 0.82, 0.55], dtype=np.float32)[None, :, None, None]
    return img * (1 - disc) + colour * disc + 0.15 * cup


def _vessels(
    img: np.ndarray,
    rho: np.ndarray,
    phi: np.ndarray,
    disc_r: np.ndarray,
    pixel: float,
    rng: np.random.Generator,
    counts: np.ndarray,
    width: tuple[float, float],
    wiggle: float,
) -> np.ndarray:
    """Vessels as spirals leaving the optic disc, ``angle = start + bend * rho``, thinning
    with distance.

    In the disc's polar coordinates a pixel's distance to such a curve is about
    ``|wrapped angle difference| * rho``: a few operations per pixel and vessel, far cheaper
    than distances to polylines. Major arcades start upwards or downwards and bend
    temporally, around the macula; ``wiggle`` makes tortuous fine new vessels (grade 4).
    """
    b = len(counts)
    darkening = np.zeros_like(rho)
    for k in range(int(counts.max(initial=0))):
        active = (k < counts)[:, None, None]
        side = rng.choice(np.array([-1.0, 1.0], dtype=np.float32), (b, 1, 1))
        if wiggle:
            start, bend = _uniform(rng, -np.pi, np.pi, (b, 1, 1)), _uniform(rng, -3.0, 3.0, (b, 1, 1))
            length = _uniform(rng, 0.12, 0.3, (b, 1, 1))
        else:
            start, bend = side * _uniform(rng, 0.3 * np.pi, 0.8 * np.pi, (b, 1, 1)), side * _uniform(rng, 0.3, 1.6, (b, 1, 1))
            length = _uniform(rng, 0.5, 1.2, (b, 1, 1))
        diff = phi - start - bend * rho
        if wiggle:
            diff -= wiggle * 0.25 * np.sin(45.0 * rho + _uniform(rng, 0.0, 2 * np.pi, (b, 1, 1)))
        diff -= np.float32(2 * np.pi) * np.round(diff * np.float32(1 / (2 * np.pi)))
        across = np.abs(diff) * rho
        w = _uniform(rng, width[0], width[1], (b, 1, 1)) * (1.0 - 0.6 * np.minimum(rho / length, 1.0))
        on = _ramp((0.5 * w - across) / (0.5 * pixel + 0.002)) * ((rho < length) & (rho > 0.6 * disc_r) & active)
        np.maximum(darkening, on, out=darkening)
    vessel_colour = np.array([0.55, 0.10, 0.06], dtype=np.float32)[None, :, None, None]
    strength = 0.8 * darkening[:, None]
    return img * (1 - strength) + vessel_colour * img.max(axis=1, keepdims=True) * strength


def _acquisition(img: np.ndarray, sites: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Camera and illumination: site tint, brightness, gamma, sensor noise."""
    b = img.shape[0]
    img = img * _SITE_TINT[sites][:, :, None, None]
    img = img * _uniform(rng, 0.75, 1.2, (b, 1, 1, 1))
    img = np.clip(img, 0, 1) ** _uniform(rng, 0.8, 1.25, (b, 1, 1, 1))
    noise = rng.standard_normal(img.shape, dtype=np.float32) * _uniform(rng, 0.01, 0.035, (b, 1, 1, 1))
    return img + noise


def _uniform(rng: np.random.Generator, low: float, high: float, shape: int | tuple[int, ...]) -> np.ndarray:
    # float32 throughout: a float64 parameter would silently promote every pixel array.
    return rng.uniform(low, high, shape).astype(np.float32)


def _clustered(rng: np.random.Generator, mean: np.ndarray) -> np.ndarray:
    """Exudates come in groups: present in some images only, then many."""
    present = rng.random(mean.shape) < np.minimum(1.0, mean / 3.0)
    return np.where(present, rng.poisson(mean * 1.3), 0).astype(np.int64)


def _ramp(x: np.ndarray) -> np.ndarray:
    """A cheap soft step from 0 to 1 over ``x`` in [-1, 1] (anti-aliased edges)."""
    return np.clip(0.5 + 0.5 * x, 0.0, 1.0).astype(np.float32, copy=False)
