"""H&E tissue region with many ordinary nuclei, rare mitotic figures and look-alikes (pyknotic, apoptotic).

Scale 0.25 µm/px. The region is drawn tile by tile: tissue fields live at low resolution and are
interpolated exactly per tile, ordinary nuclei are stamped from a bank of pre-rendered templates, and
only the few mitotic figures and look-alikes are rendered one by one. Each of those carries a difficulty
d ∈ [0, 1]; its appearance parameters move a share d/2 of the way to the other class, so at d = 1 both
classes are drawn from the same appearance.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from dataclasses import fields as dataclass_fields

import numpy as np
from scipy import ndimage

from app.phantoms import fields, optics, shapes
from app.phantoms.model import DETECT_LABELS, LOOKALIKE_LABEL, Phantom, PhantomObject

FloatArray = np.ndarray

HAEMATOXYLIN, EOSIN = 0, 1
# Macenko's reference H&E OD vectors (unit length).
HE_VECTORS = np.stack([optics.unit((0.5626, 0.7201, 0.4062)), optics.unit((0.2159, 0.8012, 0.5581))])
TILE_PX = 1024
COARSE_PX = 32  # one low-resolution cell of the tissue-layout fields
FINE_PX = 4  # one low-resolution cell of the stroma texture
NUCLEUS_SPACING_PX = 34
NUCLEUS_HALF_PX = 20
BANK_SIZE = 96
BODY_HALF_PX = 32
AREA_PER_FIGURE_PX = 500 * 500
LOOKALIKES_PER_FIGURE = 1.5
MIN_GAP_PX = 40  # between any two figures or look-alikes
CLEARANCE_PX = 24  # no ordinary nucleus centre this close to a figure or look-alike
BOX_PX = 50


@dataclass(frozen=True)
class Tissue:
    """Low-resolution layout: tissue presence and cellularity per COARSE_PX cell, and the background stain
    amounts (2, h, w) of stroma and cytoplasm per FINE_PX cell."""

    presence: FloatArray
    cellularity: FloatArray
    background: FloatArray


@dataclass(frozen=True)
class Chromatin:
    """Appearance of a dark chromatin body (mitotic figure or look-alike); lengths in px, amounts in OD units.

    size: equivalent radius of each part; aspect: elongation of each part (plate-like when > 2);
    spikes: high-frequency outline amplitude (hairy chromosome arms); clumps: granular contrast;
    darkness: haematoxylin amount; halo: eosin change in the surrounding cell (< 0 clear, > 0 eosinophilic);
    spread: distance between parts.
    """

    size: float
    aspect: float
    spikes: float
    clumps: float
    darkness: float
    halo: float
    spread: float


@dataclass(frozen=True)
class Special:
    """A figure or look-alike: centre (px), class, difficulty, part count and layout, blended appearance."""

    y: int
    x: int
    is_figure: bool
    difficulty: float
    parts: int
    parallel: bool
    look: Chromatin


@dataclass(frozen=True)
class Stamp:
    """Rendered haematoxylin and eosin change (2, h, w) with its top-left corner in image pixels."""

    amounts: FloatArray
    top: int
    left: int


def detect_region(seed: int, width: int = 7000, height: int = 5000) -> Phantom:
    """An H&E region `width`×`height` px: about one mitotic figure per 500×500 px, 1.5 look-alikes per figure.

    Objects are mitotic figures with fixed 50×50 px boxes centred on them (clipped); distractors are the
    look-alikes with the same boxes and label "lookalike".
    """
    rng = np.random.default_rng([seed, 3])
    tissue = _tissue(rng, height, width)
    specials = _place_specials(rng, tissue, height, width)
    nuclei = _place_nuclei(rng, tissue, height, width, specials)
    bank = _nucleus_bank(rng)
    bodies = [_render_special(rng, special) for special in specials]
    vectors = optics.jitter_stains(rng, HE_VECTORS, hue=0.05, strength=(0.8, 1.2))
    light = optics.random_light(rng)
    image = np.empty((height, width, 3), dtype=np.uint8)
    for top in range(0, height, TILE_PX):
        for left in range(0, width, TILE_PX):
            h, w = min(TILE_PX, height - top), min(TILE_PX, width - left)
            amounts = _tile_amounts(tissue, nuclei, bank, bodies, top, left, h, w)
            tile_rng = np.random.default_rng([seed, 3, top, left])
            image[top : top + h, left : left + w] = optics.camera(
                optics.transmit(amounts, vectors, light), tile_rng, blur_sigma=0.0, noise_sigma=2.0
            )
    figures = tuple(_box(s, width, height) for s in specials if s.is_figure)
    lookalikes = tuple(_box(s, width, height) for s in specials if not s.is_figure)
    return Phantom(image=image, objects=figures, distractors=lookalikes)


def _box(special: Special, width: int, height: int) -> PhantomObject:
    half = BOX_PX // 2
    return PhantomObject(
        x1=max(special.x - half, 0),
        y1=max(special.y - half, 0),
        x2=min(special.x + half, width),
        y2=min(special.y + half, height),
        label=DETECT_LABELS[0] if special.is_figure else LOOKALIKE_LABEL,
        difficulty=special.difficulty,
    )


def _tissue(rng: np.random.Generator, height: int, width: int) -> Tissue:
    coarse = (height // COARSE_PX + 2, width // COARSE_PX + 2)
    fine = (height // FINE_PX + 2, width // FINE_PX + 2)
    presence = fields.smoothstep(fields.smooth_noise(rng, coarse, 3.0), -1.3, -0.8)
    cellularity = fields.smoothstep(fields.smooth_noise(rng, coarse, 2.5), -0.6, 0.4)
    # Contour lines of a smooth field are long, wavy and roughly parallel: they read as collagen fibres.
    fibres = 1.0 - 2.0 * np.abs(np.sin(2.5 * fields.smooth_noise(rng, fine, 3.0)))
    streaks = 0.7 * fibres + 0.5 * fields.smooth_noise(rng, fine, 1.0)
    ratio = COARSE_PX // FINE_PX
    fine_presence = fields.upsample_window(presence, ratio, 0, 0, *fine)
    fine_cellularity = fields.upsample_window(cellularity, ratio, 0, 0, *fine)
    eosin = (
        fine_presence
        * (0.5 - 0.2 * fine_cellularity)
        * (1.0 + 0.22 * streaks * (1.0 - 0.5 * fine_cellularity))
    )
    haematoxylin = fine_presence * (0.03 + 0.05 * fine_cellularity)
    return Tissue(presence=presence, cellularity=cellularity, background=np.stack([haematoxylin, eosin]))


def _place_specials(rng: np.random.Generator, tissue: Tissue, height: int, width: int) -> list[Special]:
    """Figures and look-alikes in tissue, at least MIN_GAP_PX apart; at least one of each."""
    area = height * width
    n_figures = max(1, int(rng.poisson(area / AREA_PER_FIGURE_PX)))
    n_lookalikes = max(1, int(rng.poisson(LOOKALIKES_PER_FIGURE * area / AREA_PER_FIGURE_PX)))
    wanted = [True] * n_figures + [False] * n_lookalikes
    candidates = 20 * len(wanted)
    ys = rng.integers(0, height, size=candidates)
    xs = rng.integers(0, width, size=candidates)
    in_tissue = fields.sample_points(tissue.presence, COARSE_PX, ys, xs) > 0.7
    chosen: list[tuple[int, int]] = []
    for y, x in zip(ys[in_tissue], xs[in_tissue], strict=True):
        if len(chosen) == len(wanted):
            break
        if all((y - cy) ** 2 + (x - cx) ** 2 >= MIN_GAP_PX**2 for cy, cx in chosen):
            chosen.append((int(y), int(x)))
    return [_special(rng, y, x, is_figure) for (y, x), is_figure in zip(chosen, wanted, strict=False)]


def _special(rng: np.random.Generator, y: int, x: int, is_figure: bool) -> Special:
    difficulty = float(rng.beta(1.2, 1.6))
    kind = int(rng.integers(0, 3))
    figure, lookalike, parts, parallel = _kind_pair(rng, kind)
    own, other = (figure, lookalike) if is_figure else (lookalike, figure)
    if not is_figure:
        parts, parallel = (1, False) if kind < 2 else (int(rng.integers(2, 4)), False)
    return Special(y, x, is_figure, difficulty, parts, parallel, _blend(own, other, 0.5 * difficulty))


def _kind_pair(rng: np.random.Generator, kind: int) -> tuple[Chromatin, Chromatin, int, bool]:
    """Matched prototypes: metaphase plate or clumped prophase vs pyknotic nucleus;
    anaphase vs apoptotic fragments."""
    u = rng.uniform
    pyknotic = Chromatin(u(7.0, 9.5), u(1.0, 1.15), 0.0, u(0.0, 0.1), u(2.0, 2.4), u(0.15, 0.3), 0.0)
    if kind == 0:  # metaphase: one plate with hairy edges
        figure = Chromatin(
            u(8.5, 11.0), u(2.6, 3.6), u(0.08, 0.14), u(0.4, 0.6), u(1.7, 2.1), -u(0.1, 0.2), 0.0
        )
        return figure, pyknotic, 1, False
    if kind == 1:  # prophase / prometaphase: irregular clumped chromatin
        figure = Chromatin(
            u(11.0, 14.0), u(1.1, 1.4), u(0.12, 0.2), u(0.8, 1.0), u(1.5, 1.9), -u(0.1, 0.2), 0.0
        )
        return figure, pyknotic, 1, False
    anaphase = Chromatin(
        u(6.5, 8.5), u(2.5, 3.2), u(0.08, 0.14), u(0.4, 0.6), u(1.7, 2.1), -u(0.1, 0.2), u(16.0, 22.0)
    )
    apoptotic = Chromatin(u(3.5, 5.0), u(1.0, 1.1), 0.0, u(0.0, 0.1), u(2.0, 2.4), u(0.15, 0.3), u(8.0, 12.0))
    return anaphase, apoptotic, 2, True


def _blend(own: Chromatin, other: Chromatin, share: float) -> Chromatin:
    """Move `share` of the way from `own` to `other` in every appearance parameter."""
    mixed = {
        f.name: (1 - share) * getattr(own, f.name) + share * getattr(other, f.name)
        for f in dataclass_fields(own)
    }
    return replace(own, **mixed)


def _render_special(rng: np.random.Generator, special: Special) -> Stamp:
    """Chromatin parts plus the surrounding cell's eosin change, blurred like the optics."""
    yy, xx = shapes.local_grid(BODY_HALF_PX)
    look = special.look
    angle = float(rng.uniform(0, np.pi))
    chromatin = np.zeros_like(yy)
    for offset in _part_offsets(rng, special, angle):
        outline = shapes.random_outline(rng, look.size, look.aspect, 0.1, look.spikes, offset=offset)
        outline = replace(outline, angle=angle + float(rng.normal(0, 0.15)))
        mask = shapes.fill(outline, yy, xx)
        grain = np.clip(
            1 - 0.6 * look.clumps + 0.9 * look.clumps * shapes.texture(rng, yy.shape, 1.2), 0.15, 2.0
        )
        chromatin = np.maximum(chromatin, look.darkness * mask * grain)
    cell_radius = max(look.size * max(look.aspect, 1.0), look.spread) * 0.9 + 9.0
    cell = shapes.fill(
        shapes.random_outline(rng, cell_radius, float(rng.uniform(1.0, 1.25)), 0.08), yy, xx, edge=2.5
    )
    amounts = np.stack([chromatin, look.halo * cell * (1 - np.clip(chromatin, 0, 1))])
    amounts = ndimage.gaussian_filter(amounts, sigma=(0, 0.7, 0.7))
    return Stamp(amounts.astype(np.float32), special.y - BODY_HALF_PX, special.x - BODY_HALF_PX)


def _part_offsets(rng: np.random.Generator, special: Special, angle: float) -> list[tuple[float, float]]:
    """Part centres (dy, dx) px: two parallel plates across the plate axis, or fragments scattered around."""
    spread = special.look.spread
    if special.parts == 1:
        return [(0.0, 0.0)]
    if special.parallel:
        normal = angle + np.pi / 2
        return [(s * spread / 2 * np.sin(normal), s * spread / 2 * np.cos(normal)) for s in (-1.0, 1.0)]
    angles = rng.uniform(0, 2 * np.pi) + np.linspace(0, 2 * np.pi, special.parts, endpoint=False)
    return [(spread / 2 * np.sin(a), spread / 2 * np.cos(a)) for a in angles]


@dataclass(frozen=True)
class Nuclei:
    """Ordinary nuclei: centres (px) and index into the template bank."""

    ys: np.ndarray
    xs: np.ndarray
    template: np.ndarray


def _place_nuclei(
    rng: np.random.Generator, tissue: Tissue, height: int, width: int, specials: list[Special]
) -> Nuclei:
    """Jittered grid, kept with probability presence·(0.3 + 0.7·cellularity), cleared around specials."""
    grid_y, grid_x = np.mgrid[0:height:NUCLEUS_SPACING_PX, 0:width:NUCLEUS_SPACING_PX]
    jitter = rng.uniform(-0.4, 0.4, size=(2, grid_y.size)) * NUCLEUS_SPACING_PX
    ys = np.clip(grid_y.ravel() + jitter[0], 0, height - 1).astype(np.int64)
    xs = np.clip(grid_x.ravel() + jitter[1], 0, width - 1).astype(np.int64)
    presence = fields.sample_points(tissue.presence, COARSE_PX, ys, xs)
    cellularity = fields.sample_points(tissue.cellularity, COARSE_PX, ys, xs)
    keep = rng.random(ys.size) < presence * (0.3 + 0.7 * cellularity)
    for special in specials:
        keep &= (ys - special.y) ** 2 + (xs - special.x) ** 2 >= CLEARANCE_PX**2
    return Nuclei(ys=ys[keep], xs=xs[keep], template=rng.integers(0, 8 * BANK_SIZE, size=int(keep.sum())))


def _nucleus_bank(rng: np.random.Generator) -> FloatArray:
    """8·BANK_SIZE ordinary nuclei (n, 2, h, w): haematoxylin amount and body coverage in [0, 1].

    BANK_SIZE shapes, oval, slightly irregular, 9–14 px radius, with a darker membrane, chromatin texture
    and often a nucleolus; each in its 8 rotations/reflections with its own stain-strength factor 0.8–1.2.
    """
    yy, xx = shapes.local_grid(NUCLEUS_HALF_PX)
    bank = np.empty((BANK_SIZE, 2, *yy.shape), dtype=np.float32)
    for i in range(BANK_SIZE):
        radius = float(rng.uniform(9.0, 14.0))
        outline = shapes.random_outline(rng, radius, float(rng.uniform(1.0, 1.7)), 0.07)
        body = shapes.fill(outline, yy, xx)
        inner = shapes.fill(replace(outline, radius=radius - 2.0), yy, xx, edge=1.5)
        level = float(rng.uniform(0.45, 0.85))
        chromatin = np.clip(1.0 + 0.45 * shapes.texture(rng, yy.shape, 1.0), 0.2, 2.2)
        haematoxylin = level * inner * chromatin + (level + 0.3) * (body - inner)
        if rng.random() < 0.5:
            offset = tuple(rng.uniform(-0.35, 0.35, size=2) * radius)
            nucleolus = shapes.fill(
                shapes.random_outline(rng, float(rng.uniform(1.5, 2.5)), 1.0, 0.05, offset=offset), yy, xx
            )
            haematoxylin += 0.5 * nucleolus
        bank[i] = ndimage.gaussian_filter(np.stack([haematoxylin, body]), sigma=(0, 0.7, 0.7))
    oriented = np.concatenate([_oriented(bank, k) for k in range(8)])
    oriented[:, HAEMATOXYLIN] *= rng.uniform(0.8, 1.2, size=(len(oriented), 1, 1)).astype(np.float32)
    return np.ascontiguousarray(oriented)


def _oriented(template: FloatArray, orientation: int) -> FloatArray:
    """One of the 8 rotations/reflections of a (…, h, w) template."""
    turned = np.rot90(template, k=orientation % 4, axes=(-2, -1))
    return turned[..., ::-1] if orientation >= 4 else turned


def _tile_amounts(
    tissue: Tissue, nuclei: Nuclei, bank: FloatArray, bodies: list[Stamp], top: int, left: int, h: int, w: int
) -> FloatArray:
    """Stain amounts (2, h, w) of one tile: stroma and cytoplasm, stamped nuclei, figures and look-alikes."""
    amounts = fields.upsample_window(tissue.background, FINE_PX, top, left, h, w)
    nuclear = np.stack([amounts[HAEMATOXYLIN], np.zeros((h, w), dtype=np.float32)])
    margin = NUCLEUS_HALF_PX
    near = (nuclei.ys >= top - margin) & (nuclei.ys < top + h + margin)
    near &= (nuclei.xs >= left - margin) & (nuclei.xs < left + w + margin)
    for i in np.flatnonzero(near):
        shapes.stamp(
            nuclear,
            bank[nuclei.template[i]],
            int(nuclei.ys[i]) - margin - top,
            int(nuclei.xs[i]) - margin - left,
        )
    amounts[HAEMATOXYLIN] = nuclear[0]
    amounts[EOSIN] *= 1.0 - 0.6 * np.clip(nuclear[1], 0.0, 1.0)
    for body in bodies:
        shapes.stamp(amounts, body.amounts, body.top - top, body.left - left)
    clipped: FloatArray = np.clip(amounts, 0.0, None)
    return clipped
