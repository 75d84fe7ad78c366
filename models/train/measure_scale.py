#!/usr/bin/env python3
"""Measure the relative physical scale of two crop sets (e.g. marrow/ vs pbc/).

Method: in each crop, segment the dark-violet (Giemsa) nucleus of the central cell with an
Otsu threshold on a nucleus-stain channel (mean(R,G) darkness weighted by blue excess), keep the
connected component nearest the crop centre, and take its equivalent diameter in pixels
(sqrt(4A/pi)). For every class present in both sets the ratio of median nucleus diameters
(reference / other) estimates the zoom factor that brings the other set to the reference's
scale. The reported factor is the median of the per-class ratios.

Also estimates the size of red cells in the reference set's backgrounds (pale, pink, roughly round
components) to give an absolute micrometre-per-pixel estimate (RBC diameter ~ 7.5 um).

Usage: measure_scale.py --ref DIR --other DIR [--per-class 200] [--json OUT]
"""
import argparse, json, random
from pathlib import Path
import numpy as np
from PIL import Image

IMG_EXT = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"}


def otsu(v):
    hist, edges = np.histogram(v, bins=256)
    p = hist.astype(np.float64) / max(hist.sum(), 1)
    w = np.cumsum(p); mu = np.cumsum(p * np.arange(256)); mt = mu[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        sb = (mt * w - mu) ** 2 / (w * (1 - w))
    k = int(np.nanargmax(sb))
    return edges[k + 1]


def label(mask):
    """4-connected component labelling (small images; pure numpy/python BFS on runs)."""
    from collections import deque
    h, w = mask.shape
    lab = np.zeros((h, w), np.int32); n = 0
    ys, xs = np.nonzero(mask)
    for y0, x0 in zip(ys, xs):
        if lab[y0, x0]:
            continue
        n += 1; q = deque([(y0, x0)]); lab[y0, x0] = n
        while q:
            y, x = q.popleft()
            for yy, xx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= yy < h and 0 <= xx < w and mask[yy, xx] and not lab[yy, xx]:
                    lab[yy, xx] = n; q.append((yy, xx))
    return lab, n


def nucleus_diameter(path, size=96):
    im = np.asarray(Image.open(path).convert("RGB").resize((size, size), Image.BILINEAR), np.float32)
    r, g, b = im[..., 0], im[..., 1], im[..., 2]
    stain = (b - (r + g) / 2) + (255 - g) * 0.5   # violet nuclei: blue excess and dark green
    t = otsu(stain.ravel())
    m = stain > t
    lab, n = label(m)
    if n == 0:
        return None
    c = size / 2; best, bd = None, 1e9
    for k in range(1, n + 1):
        ys, xs = np.nonzero(lab == k)
        if len(ys) < 20:
            continue
        d = np.min((ys - c) ** 2 + (xs - c) ** 2)
        if d < bd:
            bd, best = d, k
    if best is None:
        return None
    # merge all sizeable components close to the centre (lobulated nuclei of NGS/EOS)
    area = 0
    for k in range(1, n + 1):
        ys, xs = np.nonzero(lab == k)
        if len(ys) >= 20 and np.min((ys - c) ** 2 + (xs - c) ** 2) <= (size * 0.3) ** 2:
            area += len(ys)
    return float(np.sqrt(4 * area / np.pi)) * (192.0 / size)   # in pixels of a 192-px crop


def rbc_diameters(path, size=192):
    """Pale round components in the background: red cells. Returns equivalent diameters (px of 192)."""
    im = np.asarray(Image.open(path).convert("RGB").resize((size, size), Image.BILINEAR), np.float32)
    r, g, b = im[..., 0], im[..., 1], im[..., 2]
    # red cells: pinkish (r > g), darker than the very bright background in green
    bg = np.percentile(g, 95)
    m = (g < bg - 18) & (r - g > 15) & ((b - (r + g) / 2) < 15)
    lab, n = label(m)
    out = []
    for k in range(1, n + 1):
        ys, xs = np.nonzero(lab == k)
        a = len(ys)
        if a < 80:
            continue
        if ys.min() == 0 or xs.min() == 0 or ys.max() == size - 1 or xs.max() == size - 1:
            continue  # touches the border: cut off
        hgt = ys.max() - ys.min() + 1; wid = xs.max() - xs.min() + 1
        if max(hgt, wid) / max(1, min(hgt, wid)) > 1.3:
            continue  # not round
        fill = a / (hgt * wid)
        if fill < 0.6:
            continue
        out.append(float(np.sqrt(4 * a / np.pi)) * (192.0 / size))
    return out


def files(d, cls, k, rng):
    fs = sorted(p for p in (Path(d) / cls).rglob("*") if p.suffix.lower() in IMG_EXT)
    rng.shuffle(fs)
    return fs[:k]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ref", required=True); ap.add_argument("--other", required=True)
    ap.add_argument("--per-class", type=int, default=200); ap.add_argument("--json")
    a = ap.parse_args()
    rng = random.Random(0)
    ref_c = {p.name for p in Path(a.ref).iterdir() if p.is_dir()}
    oth_c = {p.name for p in Path(a.other).iterdir() if p.is_dir()}
    shared = sorted(ref_c & oth_c)
    res = {"classes": {}, "method": "median equivalent diameter of the central Otsu-segmented nucleus"}
    ratios = []
    for c in shared:
        dr = [x for x in (nucleus_diameter(p) for p in files(a.ref, c, a.per_class, rng)) if x]
        do = [x for x in (nucleus_diameter(p) for p in files(a.other, c, a.per_class, rng)) if x]
        mr, mo = float(np.median(dr)), float(np.median(do))
        ratios.append(mr / mo)
        res["classes"][c] = {"ref_median_px": round(mr, 1), "other_median_px": round(mo, 1),
                             "ratio": round(mr / mo, 3), "n_ref": len(dr), "n_other": len(do)}
        print(f"{c}: ref {mr:.1f}px (n={len(dr)})  other {mo:.1f}px (n={len(do)})  ratio {mr/mo:.3f}")
    res["factor"] = round(float(np.median(ratios)), 3)
    print(f"zoom factor other->ref: {res['factor']:.3f} (median of per-class ratios)")
    # red cells in reference backgrounds
    rb = []
    for c in sorted(ref_c):
        for p in files(a.ref, c, 60, rng):
            rb += rbc_diameters(p)
    rbo = []
    for c in sorted(oth_c):
        for p in files(a.other, c, 40, rng):
            rbo += rbc_diameters(p)
    if rb:
        res["ref_rbc_median_px"] = round(float(np.median(rb)), 1); res["ref_rbc_n"] = len(rb)
        print(f"ref red-cell eq. diameter: median {np.median(rb):.1f}px of 192 (n={len(rb)})")
    if rbo:
        res["other_rbc_median_px"] = round(float(np.median(rbo)), 1); res["other_rbc_n"] = len(rbo)
        print(f"other red-cell eq. diameter: median {np.median(rbo):.1f}px of 192 (n={len(rbo)})")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
