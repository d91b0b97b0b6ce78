"""The synthetic masks against geometry derived independently of the renderer.

``render_labels`` draws its label map from the same fields as the mask, so "every tissue label is
mask 1" holds by construction. These checks do not: they rebuild, from the layout's documented
objects alone (``SynthLayout``: fragment ellipses with radial harmonics, tear capsules, pen
strokes, out-of-scan rectangles), where the mask must be tissue and where it must be background,
with formulas written here (trigonometry where the renderer uses a recurrence; its noise only
through the documented bound ``d_noise_max``), and compare with the rendered mask.
"""

from __future__ import annotations

import numpy as np
import pytest

from gigaseg.synth import make_layout, render_region

W, H, MPP = 2400, 1600, 1.0


def _fragment_distance(lay, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Signed distance-like field of the fragment outlines (px, > 0 inside), from the layout:
    each fragment is an ellipse (cx, cy, rx, ry, rotation cos/sin) whose radius is modulated by
    harmonics of orders 2..5 (``frag_harm``: cos and sin weights)."""
    d = np.full(x.shape, -np.inf)
    for (cx, cy, rx, ry, c, s, *_), harm in zip(lay.frags, lay.frag_harm):
        u = ((x - cx) * c + (y - cy) * s) / rx
        v = (-(x - cx) * s + (y - cy) * c) / ry
        theta = np.arctan2(v, u)
        radius = 1.0 + sum(harm[k, 0] * np.cos((k + 2) * theta) + harm[k, 1] * np.sin((k + 2) * theta)
                           for k in range(harm.shape[0]))
        d = np.maximum(d, (radius - np.hypot(u, v)) * min(rx, ry))
    return d


def _segment_distance(x: np.ndarray, y: np.ndarray, x0, y0, x1, y1) -> np.ndarray:
    dx, dy = x1 - x0, y1 - y0
    t = np.clip(((x - x0) * dx + (y - y0) * dy) / max(dx * dx + dy * dy, 1e-12), 0, 1)
    return np.hypot(x - (x0 + t * dx), y - (y0 + t * dy))


@pytest.fixture(scope="module", params=[0, 13])  # layouts with pens, tears and an out-of-scan area
def slide(request):
    seed = request.param
    lay = make_layout(seed, W, H, MPP)
    rgb, mask_bg = render_region(seed, 0, 0, W, H, width=W, height=H, mpp=MPP)
    _, mask_filled = render_region(seed, 0, 0, W, H, width=W, height=H, mpp=MPP, holes="tissue")
    y, x = np.mgrid[0:H, 0:W].astype(np.float64) + 0.5
    p = lay.params
    # how far the drawn outline may stray from the fragment ellipse: the noise's documented bound,
    # the edge texture (fine texture clipped at 2.5 sd, fibres), and the field's 8-px lattice
    margin = p["d_noise_max"] + 2.5 * p["edge_fine_px"] + p["edge_fib_px"] + 8.0
    oos = np.zeros((H, W), bool)
    for x0, y0, x1, y1 in lay.oos:
        oos[max(0, int(y0)):max(0, int(y1)), max(0, int(x0)):max(0, int(x1))] = True
    return lay, rgb, mask_bg, mask_filled, x, y, _fragment_distance(lay, x, y), margin, oos


def test_deep_inside_a_fragment_is_tissue(slide):
    """With holes filled, every pixel well inside a fragment's outline is tissue."""
    lay, rgb, _, filled, x, y, d, margin, oos = slide
    inside = (d > margin) & ~oos
    assert inside.sum() > 10_000, "the layout has no fragment interior to check; pick another seed"
    assert filled[inside].all(), f"{int((filled[inside] == 0).sum())} pixels deep inside a fragment are background"


def test_far_from_every_fragment_is_mostly_glass(slide):
    """Away from the fragments only crumbs and strands (small loose bits) can be tissue."""
    lay, rgb, mask, _, x, y, d, margin, oos = slide
    outside = d < -margin
    assert outside.sum() > 10_000
    assert mask[outside].mean() < 0.05


def test_out_of_scan_rectangles_are_white_background(slide):
    lay, rgb, mask, filled, x, y, d, margin, oos = slide
    assert oos.any(), "the seeds were chosen for their out-of-scan areas"
    assert (mask[oos] == 0).all() and (filled[oos] == 0).all() and (rgb[oos] == 255).all()


def test_tears_inside_tissue_are_background_and_filled_with_holes_tissue(slide):
    lay, rgb, mask, filled, x, y, d, margin, oos = slide
    # the holes' outline jitter: 8 um peak to peak of noise, the fine texture (1.5 um per sd,
    # clipped at 2.5 sd), and the 8-px lattice the field is interpolated on
    jitter = (0.5 * 8.0 + 2.5 * 1.5) / MPP + 2.0
    core = np.zeros((H, W), bool)
    for x0, y0, x1, y1, r in lay.tears:
        if r > jitter + 1:
            core |= _segment_distance(x, y, x0, y0, x1, y1) < r - jitter
    core &= (d > margin) & ~oos
    assert core.sum() > 500, "the seeds were chosen for tears inside tissue"
    assert (mask[core] == 0).all()
    assert (filled[core] == 1).all()


def test_pen_strokes_on_glass_are_background(slide):
    lay, rgb, mask, _, x, y, d, margin, oos = slide
    ink = np.zeros((H, W), bool)
    for segments, half_width, _od in lay.pens:
        for x0, y0, x1, y1 in segments:
            ink |= _segment_distance(x, y, x0, y0, x1, y1) < 0.5 * half_width
    ink &= (d < -margin) & ~oos
    assert ink.sum() > 500, "the seeds were chosen for their pen strokes"
    assert mask[ink].mean() < 0.02  # a crumb may lie under the ink
    glass = (d < -margin) & ~ink & ~oos & (mask == 0)
    assert rgb[ink].astype(float).mean() < rgb[glass].astype(float).mean() - 15  # and the ink shows
