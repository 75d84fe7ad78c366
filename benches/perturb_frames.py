#!/usr/bin/env python3
"""Copies of labelled smear frames as a worse microscope would show them, for `marrowscope detect-eval`:
how far the localizer's scores hold up under a yellow, uneven lamp, and which defocused frames it skips.

  python3 benches/perturb_frames.py --images DIR --out DIR --lamp
  python3 benches/perturb_frames.py --images DIR --out DIR --blur SIGMA

--lamp: each channel scaled by a lamp colour (`--tint`, default red 1, green 0.92, blue 0.7: a yellowish halogen
lamp) times a light that falls from `--brightest` at the right edge to `--dimmest` at the left (defaults 0.85
and 0.45: a lamp turned down and off-centre). --blur: a Gaussian blur of SIGMA frame pixels (defocus). Frames are written as PNG (lossless) under
their own names, so the original label folder still pairs with them. Needs Pillow and NumPy
(models/train/requirements.txt).
"""
import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", required=True, help="folder of frames")
    ap.add_argument("--out", required=True, help="folder to write the changed frames to (created)")
    kind = ap.add_mutually_exclusive_group(required=True)
    kind.add_argument("--lamp", action="store_true", help="yellow lamp with light falling off across the frame")
    kind.add_argument("--blur", type=float, metavar="SIGMA", help="Gaussian blur of SIGMA pixels")
    ap.add_argument("--brightest", type=float, default=0.85, help="--lamp: light at the right edge")
    ap.add_argument("--dimmest", type=float, default=0.45, help="--lamp: light at the left edge")
    ap.add_argument("--tint", default="1,0.92,0.7", help="--lamp: the lamp's red,green,blue (each 0..1]")
    args = ap.parse_args(argv)
    try:
        args.tint = np.array([float(v) for v in args.tint.split(",")], np.float32)
    except ValueError:
        ap.error(f"--tint {args.tint!r}: expected three numbers, e.g. 1,0.92,0.7")
    if args.tint.shape != (3,) or not ((args.tint > 0) & (args.tint <= 1)).all():
        ap.error("--tint needs three numbers in (0, 1]")
    if args.blur is not None and not args.blur > 0:
        ap.error("--blur needs a positive SIGMA")
    if not 0 < args.dimmest <= args.brightest <= 1:
        ap.error("--lamp needs 0 < dimmest <= brightest <= 1")
    return args


def under_lamp(rgb, tint, brightest, dimmest):
    """The frame under a lamp of colour `tint` whose light falls off linearly from right to left."""
    width = rgb.shape[1]
    light = np.linspace(dimmest, brightest, width, dtype=np.float32)[None, :, None]
    return np.clip(np.rint(rgb.astype(np.float32) * light * tint), 0, 255).astype(np.uint8)


def main(argv=None):
    args = parse_args(argv)
    src, out = Path(args.images), Path(args.out)
    frames = sorted(p for p in src.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if src.is_dir() else []
    if not frames:
        sys.exit(f"perturb_frames: no frames in {src}")
    out.mkdir(parents=True, exist_ok=True)
    for path in frames:
        img = Image.open(path).convert("RGB")
        if args.lamp:
            img = Image.fromarray(under_lamp(np.asarray(img), args.tint, args.brightest, args.dimmest))
        else:
            img = img.filter(ImageFilter.GaussianBlur(args.blur))
        img.save(out / (path.stem + ".png"))
    print(f"perturb_frames: {len(frames)} frames written to {out}")


if __name__ == "__main__":
    main()
