"""Texture banks for the synthetic slide generator (private).

Periodic textures (fibres, cytoplasm, fine noise, adipocyte walls) and sprite banks
(nuclei, dust) are drawn once per (seed, mpp) from the seed and then *looked up* by
global pixel position, so rendering stays pointwise (see ``# NOTE [Determinism]`` in
``synth.py``). Sizes are given in micrometres and converted with the mpp.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage

# Largest background gap the stroma texture may contain, um (diameter of the largest
# inscribed disc). Holes drawn as lumens and tears are always wider than
# HOLE_MIN_UM, so the two never overlap in size: see docs/synth.md.
FIBRE_GAP_MAX_UM = 12.0


@dataclass(frozen=True)
class TextureBank:
    """Per-slide textures; all float32.

    Attributes:
        fine: (P, P) zero-mean, unit-std band-pass noise (feature ~8 um), P = 1024.
        fib_a, fib_b: (P, P) fibre density in [0, 1] at two orientations.
        fib_a_blur, fib_b_blur: the same, out of focus.
        cyto: (P, P) granular cytoplasm texture in [0, 1]; cyto_blur out of focus.
        adip: (P2, P2) adipocyte walls in [0, 1] (1 on a wall), P2 = 2048; adip_blur.
        noise: (256, 256, 3) white sensor noise, unit std.
        nuc_a: (K+1, cA, cA) epithelial/lymphocyte nuclei sprites in [0, 1] (last one empty).
        nuc_c: (K+1, cC, cC) the same on a second, incommensurate grid (breaks the lattice look).
        nuc_b: (K+1, cB, cB) spindle (stromal) nuclei; first half along fibre a, then b.
        nuc_a_blur, nuc_b_blur: out of focus.
        dust: (K+1, cD, cD) dust, lint and debris sprites in [0, 1].
    """

    fine: np.ndarray
    fib_a: np.ndarray
    fib_b: np.ndarray
    fib_a_blur: np.ndarray
    fib_b_blur: np.ndarray
    cyto: np.ndarray
    cyto_blur: np.ndarray
    adip: np.ndarray
    adip_blur: np.ndarray
    noise: np.ndarray
    nuc_a: np.ndarray
    nuc_b: np.ndarray
    nuc_c: np.ndarray
    nuc_a_blur: np.ndarray
    nuc_b_blur: np.ndarray
    nuc_c_blur: np.ndarray
    dust: np.ndarray


P = 1024
P2 = 2048
PN = 256


def _bandpass(rng: np.random.Generator, n: int, sigma_px: tuple[float, float], theta: float) -> np.ndarray:
    """Periodic Gaussian-filtered white noise, zero mean unit std; anisotropic when sigmas differ."""
    white = rng.standard_normal((n, n)).astype(np.float32)
    k = np.fft.fftfreq(n).astype(np.float32) * np.float32(2 * np.pi)
    ky, kx = np.meshgrid(k, k[: n // 2 + 1], indexing="ij")
    c, s = np.cos(theta), np.sin(theta)
    k_along = kx * c + ky * s
    k_across = -kx * s + ky * c
    filt = np.exp(-0.5 * ((k_along * sigma_px[0]) ** 2 + (k_across * sigma_px[1]) ** 2))
    filt[0, 0] = 0.0
    out = np.fft.irfft2(np.fft.rfft2(white) * filt, s=(n, n)).astype(np.float32)
    out -= out.mean()
    out /= out.std() + 1e-12
    return out


def _smoothstep(x: np.ndarray, lo: float | np.ndarray, hi: float | np.ndarray) -> np.ndarray:
    t = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _wrap_edt(gap: np.ndarray, reach: float) -> np.ndarray:
    """Distance to the nearest non-gap pixel on a periodic image, exact up to ``reach`` px."""
    r = int(math.ceil(reach)) + 2
    edt = ndimage.distance_transform_edt(np.pad(gap, r, mode="wrap"))
    return edt[r:-r, r:-r]


def _fibres(rng: np.random.Generator, theta: float, mpp: float) -> tuple[np.ndarray, np.ndarray]:
    """Collagen: wavy bundles along theta separated by thin clefts (zero lines of the noise)."""
    n1 = _bandpass(rng, P, (22.0 / mpp, 4.0 / mpp), theta)
    n2 = _bandpass(rng, P, (8.0 / mpp, 1.6 / mpp), theta)
    n3 = _bandpass(rng, P, (35.0 / mpp, 35.0 / mpp), 0.0)  # denser and looser patches
    field = 0.85 * n1 + 0.4 * n2
    # waviness: a smooth periodic domain warp of ~5 um at a ~25 um scale
    wx = _bandpass(rng, P, (25.0 / mpp, 25.0 / mpp), 0.0) * (5.0 / mpp)
    wy = _bandpass(rng, P, (25.0 / mpp, 25.0 / mpp), 0.0) * (5.0 / mpp)
    yy, xx = np.mgrid[0:P, 0:P].astype(np.float32)
    field = ndimage.map_coordinates(field, [yy + wy, xx + wx], order=1, mode="grid-wrap").astype(np.float32)
    loose = _smoothstep(-n3, -0.6, 1.2)
    w0 = 0.08 + 0.3 * loose
    cleft = 1.0 - _smoothstep(np.abs(field), w0, w0 + 0.25)
    dens = 0.6 + 0.4 * _smoothstep(n3 + 0.5 * n1, -1.2, 1.2)
    fib = (1.0 - cleft) * dens
    # NOTE [Fibre gaps]: gaps between fibres are tissue by definition, so none may be as
    # wide as a drawn hole. Fill any gap wider than FIBRE_GAP_MAX_UM with faint matrix.
    r_max = 0.5 * FIBRE_GAP_MAX_UM / mpp
    edt = _wrap_edt(fib < 0.5, r_max)
    fill = _smoothstep(edt, 0.4 * r_max, r_max) * np.maximum(0.5, 0.8 * dens)  # >= 0.5 beyond r_max
    fib = np.maximum(fib, fill).astype(np.float32)
    blur = ndimage.gaussian_filter(fib, 2.5 / mpp, mode="wrap").astype(np.float32)
    return fib, blur


def _adipose(rng: np.random.Generator, mpp: float) -> np.ndarray:
    """Periodic jittered-grid Voronoi walls, 1 on a wall (P2 x P2)."""
    cell_um = rng.uniform(55.0, 85.0)
    ncell = int(2 ** round(math.log2(max(4.0, P2 * mpp / cell_um))))  # a power of two: cells tile P2
    cs = P2 // ncell
    jx = rng.uniform(0.15, 0.85, size=(ncell, ncell)).astype(np.float32) * cs
    jy = rng.uniform(0.15, 0.85, size=(ncell, ncell)).astype(np.float32) * cs
    wall_px = rng.uniform(1.2, 2.2) / mpp
    pix = (np.arange(cs, dtype=np.float32) + 0.5)
    px = pix[None, None, None, :]  # (cell row, row in cell, cell col, col in cell)
    py = pix[None, :, None, None]
    d1 = np.full((ncell, cs, ncell, cs), np.inf, np.float32)
    d2 = d1.copy()
    for dj in (-1, 0, 1):
        for di in (-1, 0, 1):
            sx = np.roll(jx, (-dj, -di), axis=(0, 1))[:, None, :, None] + np.float32(di * cs)
            sy = np.roll(jy, (-dj, -di), axis=(0, 1))[:, None, :, None] + np.float32(dj * cs)
            dd = (px - sx) ** 2 + (py - sy) ** 2
            d2 = np.minimum(d2, np.maximum(d1, dd))
            d1 = np.minimum(d1, dd)
    out = np.clip(1.0 - (np.sqrt(d2) - np.sqrt(d1)) / wall_px, 0.0, 1.0).reshape(P2, P2)
    # walls vary in thickness and stain a little
    mod = 0.75 + 0.25 * _smoothstep(_bandpass(rng, P2, (20.0 / mpp, 20.0 / mpp), 0.0), -1.0, 1.0)
    return (out * mod).astype(np.float32)


def _nuclei(rng: np.random.Generator, k: int, cell: int, mpp: float, kind: str, thetas=(0.0,)) -> np.ndarray:
    bank = np.zeros((k + 1, cell, cell), np.float32)
    yy, xx = np.mgrid[0:cell, 0:cell].astype(np.float32) + 0.5
    n_chrom = max(256, 1 << int(math.ceil(math.log2(2 * cell))))
    chrom = _bandpass(rng, n_chrom, (0.6 / mpp, 0.6 / mpp), 0.0)
    for i in range(k):
        if kind == "round":
            if rng.random() < 0.3:  # lymphocyte: small, round, dark
                a = rng.uniform(2.6, 3.6) / mpp
                b = a * rng.uniform(0.85, 1.0)
                dens = rng.uniform(0.95, 1.15)
            else:
                a = rng.uniform(3.4, 5.2) / mpp
                b = a * rng.uniform(0.6, 0.95)
                dens = rng.uniform(0.55, 0.85)
            ang = rng.uniform(0, np.pi)
        else:
            a = rng.uniform(5.0, 9.0) / mpp
            b = rng.uniform(1.1, 2.0) / mpp
            dens = rng.uniform(0.7, 1.05)
            ang = thetas[i * len(thetas) // k] + rng.normal(0, 0.2)
        a = min(a, cell / 2 - 1.5)
        b = min(b, a)
        room = cell / 2 - a - 1.0
        cx = cell / 2 + rng.uniform(-room, room) if room > 0 else cell / 2
        cy = cell / 2 + rng.uniform(-room, room) if room > 0 else cell / 2
        u = (xx - cx) * np.cos(ang) + (yy - cy) * np.sin(ang)
        v = -(xx - cx) * np.sin(ang) + (yy - cy) * np.cos(ang)
        rho = np.sqrt((u / a) ** 2 + (v / b) ** 2)
        phi = np.arctan2(v, u)
        wob = 1.0 + 0.06 * np.cos(3 * phi + rng.uniform(0, 6.3)) + 0.04 * np.cos(5 * phi + rng.uniform(0, 6.3))
        edge = np.clip((wob - rho) * min(a, b) / 0.8 + 0.5, 0.0, 1.0)
        oy, ox = rng.integers(0, n_chrom - cell, size=2)
        tex = chrom[oy : oy + cell, ox : ox + cell]
        body = 0.8 + 0.18 * tex + 0.25 * np.clip(rho / wob - 0.7, 0, 0.3) / 0.3  # darker rim
        bank[i] = np.clip(edge * body * dens, 0.0, 1.6)
    return bank


def _dust(rng: np.random.Generator, k: int, cell: int, mpp: float) -> np.ndarray:
    bank = np.zeros((k + 1, cell, cell), np.float32)
    yy, xx = np.mgrid[0:cell, 0:cell].astype(np.float32) + 0.5
    for i in range(k):
        kind = rng.random()
        if kind < 0.55:  # a few specks
            for _ in range(rng.integers(1, 5)):
                r = rng.uniform(0.6, 4.0) / mpp
                cx, cy = rng.uniform(r + 2, cell - r - 2, size=2)
                dd = np.hypot(xx - cx, yy - cy)
                bank[i] = np.maximum(bank[i], np.clip((r - dd) / 0.8 + 0.5, 0, 1) * rng.uniform(0.5, 1.2))
        elif kind < 0.8:  # lint: a thin curved fibre
            n = 40
            length = rng.uniform(20, 70) / mpp
            ang = rng.uniform(0, 2 * np.pi)
            curv = rng.normal(0, 0.04)
            px, py = rng.uniform(0.3 * cell, 0.7 * cell, size=2)
            path = []
            for _ in range(n):
                path.append((px, py))
                ang += curv
                px += np.cos(ang) * length / n
                py += np.sin(ang) * length / n
            pts = np.clip(np.array(path), 3, cell - 3)
            dmin = np.full(xx.shape, np.inf, np.float32)
            for (x1, y1) in pts:
                dmin = np.minimum(dmin, np.hypot(xx - x1, yy - y1))
            hw = rng.uniform(0.5, 1.2) / mpp
            bank[i] = np.clip((hw - dmin) / 0.7 + 0.5, 0, 1) * rng.uniform(0.4, 0.9)
        elif kind < 0.9:  # debris clump: irregular blob with texture
            r = rng.uniform(4, min(18.0, 0.4 * cell * mpp)) / mpp
            cx, cy = rng.uniform(r * 1.3 + 2, cell - r * 1.3 - 2, size=2)
            phi = np.arctan2(yy - cy, xx - cx)
            rr = r * (1 + 0.25 * np.cos(2 * phi + rng.uniform(0, 6)) + 0.15 * np.cos(3 * phi + rng.uniform(0, 6)))
            dd = np.hypot(xx - cx, yy - cy)
            bank[i] = np.clip((rr - dd) / 1.5 + 0.5, 0, 1) * rng.uniform(0.5, 1.3) * (0.7 + 0.3 * rng.random(xx.shape))
        # else: an empty cell
    return bank


@lru_cache(maxsize=4)
def texture_bank(seed: int, mpp: float, fibre_theta: float, adipose: bool = True) -> TextureBank:
    """The texture bank of one slide (cached; a pure function of its arguments).

    ``adipose=False`` (the variety profile, which has its own fat texture) skips the adipocyte
    walls: ``adip`` and ``adip_blur`` are then None and the later textures are drawn from a
    different point of the random stream.
    """
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0x7E27])
    fine = _bandpass(rng, P, (3.0 / mpp, 3.0 / mpp), 0.0)
    fib_a, fib_a_blur = _fibres(rng, fibre_theta, mpp)
    fib_b, fib_b_blur = _fibres(rng, fibre_theta + 1.2, mpp)
    cyto_n = _bandpass(rng, P, (0.9 / mpp, 0.9 / mpp), 0.0) + 0.6 * _bandpass(rng, P, (4.0 / mpp, 4.0 / mpp), 0.0)
    cyto = _smoothstep(cyto_n, -1.8, 1.8).astype(np.float32)
    cyto_blur = ndimage.gaussian_filter(cyto, 2.5 / mpp, mode="wrap").astype(np.float32)
    if adipose:
        adip = _adipose(rng, mpp)
        adip_blur = ndimage.gaussian_filter(adip, 2.5 / mpp, mode="wrap").astype(np.float32)
    else:
        adip = adip_blur = None
    noise = rng.standard_normal((PN, PN, 3)).astype(np.float32)
    c_a, c_b, c_c, c_d = nuclei_cells(mpp)
    nuc_a = _nuclei(rng, 96, c_a, mpp, "round")
    nuc_c = _nuclei(rng, 96, c_c, mpp, "round")
    nuc_c_blur = ndimage.gaussian_filter(nuc_c, (0, 2.5 / mpp, 2.5 / mpp), mode="constant").astype(np.float32)
    nuc_b = _nuclei(rng, 96, c_b, mpp, "spindle", thetas=(fibre_theta, fibre_theta + 1.2))
    sig = (0, 2.5 / mpp, 2.5 / mpp)
    nuc_a_blur = ndimage.gaussian_filter(nuc_a, sig, mode="constant").astype(np.float32)
    nuc_b_blur = ndimage.gaussian_filter(nuc_b, sig, mode="constant").astype(np.float32)
    dust = _dust(rng, 48, c_d, mpp)
    return TextureBank(
        fine=fine, fib_a=fib_a, fib_b=fib_b, fib_a_blur=fib_a_blur, fib_b_blur=fib_b_blur,
        cyto=cyto, cyto_blur=cyto_blur, adip=adip, adip_blur=adip_blur, noise=noise,
        nuc_a=nuc_a, nuc_b=nuc_b, nuc_c=nuc_c, nuc_a_blur=nuc_a_blur, nuc_b_blur=nuc_b_blur,
        nuc_c_blur=nuc_c_blur, dust=dust,
    )


def nuclei_cells(mpp: float) -> tuple[int, int, int, int]:
    """Cell sizes (px) of the two round-nuclei grids, the spindle-nuclei grid and the dust grid."""
    return (max(8, int(round(14.0 / mpp))), max(12, int(round(26.0 / mpp))), max(9, int(round(17.0 / mpp))),
            min(512, max(32, int(round(110.0 / mpp)))))


# ---------------------------------------------------------------------------- variety profile


def _adipose_cover(rng: np.random.Generator, mpp: float) -> np.ndarray:
    """Periodic jittered-grid Voronoi walls as pixel coverage (P2 x P2), cells 50-120 um."""
    cell_um = rng.uniform(50.0, 120.0)
    ncell = int(2 ** round(math.log2(max(4.0, P2 * mpp / cell_um))))
    ncell = min(ncell, P2 // 4)
    cs = P2 // ncell
    jx = rng.uniform(0.15, 0.85, size=(ncell, ncell)).astype(np.float32) * cs
    jy = rng.uniform(0.15, 0.85, size=(ncell, ncell)).astype(np.float32) * cs
    wall_px = np.float32(rng.uniform(1.0, 2.5) / mpp)
    pix = np.arange(cs, dtype=np.float32) + 0.5
    px = pix[None, None, None, :]
    py = pix[None, :, None, None]
    d1 = np.full((ncell, cs, ncell, cs), np.inf, np.float32)
    d2 = d1.copy()
    for dj in (-1, 0, 1):
        for di in (-1, 0, 1):
            sx = np.roll(jx, (-dj, -di), axis=(0, 1))[:, None, :, None] + np.float32(di * cs)
            sy = np.roll(jy, (-dj, -di), axis=(0, 1))[:, None, :, None] + np.float32(dj * cs)
            dd = (px - sx) ** 2 + (py - sy) ** 2
            d2 = np.minimum(d2, np.maximum(d1, dd))
            d1 = np.minimum(d1, dd)
    s = 0.5 * (np.sqrt(d2) - np.sqrt(d1))  # about the distance to the wall's middle line, px
    half = 0.5 * wall_px
    cover = np.clip(np.minimum(s + 0.5, half) - np.maximum(s - 0.5, -half), 0.0, 1.0).reshape(P2, P2)
    mod = 0.75 + 0.25 * _smoothstep(_bandpass(rng, P2, (20.0 / mpp, 20.0 / mpp), 0.0), -1.0, 1.0)
    return (cover * mod).astype(np.float32)


def _splat(rng: np.random.Generator, n_points: int, kernel: np.ndarray) -> np.ndarray:
    """Sum of ``kernel`` copies at ``n_points`` uniform random points of a periodic P x P image."""
    counts = np.zeros((P, P), np.float32)
    ij = rng.integers(0, P, size=(n_points, 2))
    np.add.at(counts, (ij[:, 0], ij[:, 1]), 1.0)
    k = np.zeros((P, P), np.float32)
    r = kernel.shape[0] // 2
    k[np.ix_(np.arange(-r, r + 1) % P, np.arange(-r, r + 1) % P)] = kernel
    return np.fft.irfft2(np.fft.rfft2(counts) * np.fft.rfft2(k), s=(P, P)).astype(np.float32)


def _red_cells(rng: np.random.Generator, mpp: float) -> tuple[np.ndarray, np.ndarray]:
    """Packed red cells (discs with a pale centre), layered as in a clot, and fibrin strands."""
    rad = 3.6 / mpp  # px
    r = int(math.ceil(rad + 1))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1].astype(np.float32)
    dist = np.hypot(xx, yy)
    disc = np.clip(rad + 0.5 - dist, 0.0, 1.0)  # pixel coverage, also below 1 px
    kernel = disc * (1.0 - 0.45 * np.clip(1.0 - dist / (0.55 * rad + 0.5), 0.0, 1.0))
    area_um2 = (P * mpp) ** 2
    n = int(min(4e6, 1.3 * area_um2 / (math.pi * 3.6**2)))
    dens = _splat(rng, n, kernel.astype(np.float32))
    layers = _smoothstep(_bandpass(rng, P, (60.0 / mpp, 15.0 / mpp), rng.uniform(0, np.pi)), -1.2, 1.2)
    rbc = (1.0 - np.exp(-1.1 * dens)) * (0.45 + 0.55 * layers)
    strands = _bandpass(rng, P, (12.0 / mpp, 1.5 / mpp), rng.uniform(0, np.pi))
    fibrin = (1.0 - _smoothstep(np.abs(strands), 0.0, 0.35)) * (1.0 - 0.6 * layers)
    return rbc.astype(np.float32), fibrin.astype(np.float32)


def _ice(rng: np.random.Generator, k: int, cell: int, mpp: float) -> np.ndarray:
    """Ice-crystal holes: 1-4 rounded-angular holes 3-16 um across per sprite (coverage)."""
    bank = np.zeros((k + 1, cell, cell), np.float32)
    yy, xx = np.mgrid[0:cell, 0:cell].astype(np.float32) + 0.5
    for i in range(k):
        for _ in range(int(rng.integers(1, 5))):
            r = min(rng.uniform(1.5, 8.0) / mpp, 0.3 * cell)
            cx, cy = rng.uniform(r + 1, cell - r - 1, size=2)
            phi = np.arctan2(yy - cy, xx - cx)
            rr = r * (1 + 0.18 * np.cos(3 * phi + rng.uniform(0, 6.3)) + 0.1 * np.cos(5 * phi + rng.uniform(0, 6.3)))
            bank[i] = np.maximum(bank[i], np.clip(rr + 0.5 - np.hypot(xx - cx, yy - cy), 0.0, 1.0))
    return bank


def ice_cell(mpp: float) -> int:
    """Cell size (px) of the ice-crystal grid (about 40 um)."""
    return min(512, max(6, int(round(40.0 / mpp))))


# The variety profile's own textures, each built when a slide first needs it (cached; a pure
# function of (seed, mpp); each has its own random stream).


@lru_cache(maxsize=4)
def adipose_cover(seed: int, mpp: float) -> tuple[np.ndarray, np.ndarray]:
    """(P2, P2) adipocyte walls as the fraction of each pixel a wall covers, and out of focus.

    Walls 1-2.5 um thick around cells of 50-120 um: at 8-10 um/px a wall covers a few percent of
    a pixel, so fat fades to nearly white at low resolution, as scanned fat does.
    """
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0x7A41, 1])
    adip = _adipose_cover(rng, mpp)
    return adip, ndimage.gaussian_filter(adip, 2.5 / mpp, mode="wrap").astype(np.float32)


@lru_cache(maxsize=4)
def red_cells(seed: int, mpp: float) -> tuple[np.ndarray, np.ndarray]:
    """(P, P) red-cell density in [0, 1] (packed 7-um discs, pale centres, layered) and fibrin."""
    return _red_cells(np.random.default_rng([int(seed) & 0xFFFFFFFF, 0x7A41, 2]), mpp)


@lru_cache(maxsize=4)
def ice_holes(seed: int, mpp: float) -> np.ndarray:
    """(K+1, c, c) ice-crystal holes of frozen sections as coverage in [0, 1], the last empty."""
    return _ice(np.random.default_rng([int(seed) & 0xFFFFFFFF, 0x7A41, 3]), 64, ice_cell(mpp), mpp)


def clear_variety_caches() -> None:
    for f in (adipose_cover, red_cells, ice_holes):
        f.cache_clear()
