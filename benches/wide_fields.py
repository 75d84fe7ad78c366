#!/usr/bin/env python3
"""White-cell detection in fields as wide as the boards' cameras show, measured with `marrowscope detect-eval`
on real frames put side by side (README, "Fields wider than the training frames'").

TXL-PBC's frames show 34-48 µm along their longer side; the board profiles' cameras show 96-125 µm. No
labelled frames of such fields exist, so this script builds them: TXL-PBC val frames of one source (one frame
size) put side by side, k × k, their label files' boxes moved with them (every class, so `detect-eval`'s
agreed-cell scores still see the red-cell boxes). Each source's scale comes from its red cells, taken as
7.5 µm: the median red-cell box of its *training* frames (mean of width and height). Then, for each detector:

  squeezed  the detector's manifest without `field_um`: every frame read at the network's own input side,
            as before 2026-12-06 afternoon;
  now       the shipped manifest: a wider field read at a larger input (`DetectorManifest::input_side`);
  whole     the same run, scored over the cells whole in their own frame: expert boxes, and found boxes
            matched to none, more than a pixel clear of every seam and of the mosaic's edge (the mosaic's
            seams cut cells a real frame of that field would show whole);
  one by one  the same frames, each on its own at the source's scale.

  python3 benches/wide_fields.py                       # both shipped detectors, every source
  python3 benches/wide_fields.py --detector models/wbc-detector-fast.ron --limit 2

Needs a built binary (default target/release/marrowscope: `cargo build --release`) and the training venv
(models/train/requirements.txt: it reads label files with models/train/detector.py). Prints a Markdown table;
found / false / missed per cell.
"""
import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent
sys.path.insert(0, str(PROJECT / "models" / "train"))
from detector import yolo_labelled  # noqa: E402  (the project's one reader of YOLO label files)

RED_CELL_UM = 7.5
WBC, RBC = 0, 1
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}


@dataclass(frozen=True)
class Source:
    """Frames of one size put side by side `k` × `k`; `halve` bins the mosaic 2 × 2 afterwards."""
    size: tuple
    k: int
    label: str
    halve: bool = False


SOURCES = (
    Source((640, 480), 2, "2 × 2 of 640×480 (the Jetson's field)"),
    Source((640, 480), 2, "the same binned 2 × 2 to 640×480 (the Pi Zero 2 W's frame)", halve=True),
    Source((416, 416), 3, "3 × 3 of 416×416 (the Raspberry Pi 4's field)"),
    Source((575, 575), 2, "2 × 2 of 575×575"),
    Source((360, 363), 3, "3 × 3 of 360×363"),
)


@dataclass
class Mosaic:
    """One built frame: its tiles' size in its own pixels and its white-cell expert boxes (x0, y0, x1, y1)."""
    name: str
    tile_w: float
    tile_h: float
    white: list = field(default_factory=list)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=str(PROJECT / "target" / "release" / "marrowscope"))
    ap.add_argument("--frames", default=str(PROJECT.parent / "shared" / "data" / "frames" / "txl-pbc"),
                    help="TXL-PBC folder (images/{train,val}, labels/{train,val})")
    ap.add_argument("--detector", action="append",
                    help="detector manifest (repeatable); default: both shipped detectors")
    ap.add_argument("--limit", type=int, help="at most this many mosaics per source (a quick check)")
    ap.add_argument("--work", help="build the mosaics here and keep them (default: a temporary folder)")
    args = ap.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        ap.error("--limit needs at least 1")
    args.detector = [Path(d) for d in (args.detector or [PROJECT / "models" / "wbc-detector-fast.ron",
                                                       PROJECT / "models" / "wbc-detector.ron"])]
    return args


def yolo_rows(label_file):
    """(class, cx, cy, w, h) rows of a YOLO label file, normalized; none when the file is missing."""
    return [(int(c), cx, cy, w, h) for c, cx, cy, w, h in yolo_labelled(label_file).tolist()]


def frames_of_size(root, split, size):
    """The split's frames of one pixel size, sorted by name, as (image, label file) pairs."""
    images = sorted(p for p in (root / "images" / split).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    return [(p, root / "labels" / split / f"{p.stem}.txt") for p in images if Image.open(p).size == size]


def scale_of(root, size):
    """µm per pixel of a source's frames: a red cell (7.5 µm) over the median red-cell box of its training
    frames, the box's size taken as the mean of its width and height."""
    w, h = size
    sides = [(bw * w + bh * h) / 2 for _, label in frames_of_size(root, "train", size)
             for c, _, _, bw, bh in yolo_rows(label) if c == RBC]
    if not sides:
        raise SystemExit(f"{root}: no red-cell boxes in the training frames of {w}×{h} to take the scale from")
    return RED_CELL_UM / float(np.median(sides))


def build_mosaics(frames, source, out, limit=None):
    """Writes k × k mosaics of `frames` (groups in name order, a short last group left out) as PNG with
    their moved YOLO labels under out/images and out/labels; returns the mosaics and the frames used."""
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    k, (w, h) = source.k, source.size
    groups = [frames[i:i + k * k] for i in range(0, len(frames) - k * k + 1, k * k)][:limit]
    mosaics = []
    for n, group in enumerate(groups):
        picture = Image.new("RGB", (w * k, h * k))
        lines = []
        for i, (image, label) in enumerate(group):
            gx, gy = i % k, i // k
            picture.paste(Image.open(image).convert("RGB"), (gx * w, gy * h))
            lines += [(c, (gx + cx) / k, (gy + cy) / k, bw / k, bh / k) for c, cx, cy, bw, bh in yolo_rows(label)]
        if source.halve:
            picture = picture.reduce(2)
        name = f"mosaic{n:03d}"
        picture.save(out / "images" / f"{name}.png")
        (out / "labels" / f"{name}.txt").write_text("".join(f"{c} {cx:.6f} {cy:.6f} {bw:.6f} {bh:.6f}\n"
                                                            for c, cx, cy, bw, bh in lines))
        mw, mh = picture.size
        white = [((cx - bw / 2) * mw, (cy - bh / 2) * mh, (cx + bw / 2) * mw, (cy + bh / 2) * mh)
                 for c, cx, cy, bw, bh in lines if c == WBC]
        mosaics.append(Mosaic(name, mw / k, mh / k, white))
    return mosaics, [f for g in groups for f in g]


def whole_in_its_frame(box, tile_w, tile_h, margin=1.0):
    """A box lies inside one tile, more than `margin` pixels clear of each of its edges."""
    x0, y0, x1, y1 = box
    tx, ty = int(x0 // tile_w), int(y0 // tile_h)
    return (x0 > tx * tile_w + margin and x1 < (tx + 1) * tile_w - margin
            and y0 > ty * tile_h + margin and y1 < (ty + 1) * tile_h - margin)


def whole_cell_counts(report, mosaics):
    """(found, false, missed) over the cells whole in their own frame, from `detect-eval --json`'s listed
    errors: expert boxes clear of the seams less those missed, and false boxes clear of the seams."""
    by_name = {m.name: m for m in mosaics}
    expert = sum(whole_in_its_frame(b, m.tile_w, m.tile_h) for m in mosaics for b in m.white)
    false = missed = 0
    for errors in report["frames_with_errors"]:
        m = by_name[errors["frame"]]
        false += sum(whole_in_its_frame(b, m.tile_w, m.tile_h) for b in errors["false_positives"])
        missed += sum(whole_in_its_frame(b, m.tile_w, m.tile_h) for b in errors["missed"])
    return expert - missed, false, missed


def squeezed_manifest(manifest, folder):
    """A copy of a detector manifest without `field_um` (every frame read at its input side), pointing at
    the original ONNX file."""
    text = manifest.read_text()
    onnx = manifest.resolve().parent / re.search(r'file:\s*"([^"]+)"', text).group(1)
    text = re.sub(r'file:\s*"[^"]+"', f'file: "{onnx}"', text)
    text = re.sub(r"\n\s*field_um:[^\n]*", "", text)
    copy = folder / f"{manifest.stem}-squeezed.ron"
    copy.write_text(text)
    return copy


def detect_eval(binary, images, labels, um_per_px, detector):
    """`marrowscope detect-eval --json` on YOLO-labelled frames; its report."""
    cmd = [str(binary), "detect-eval", "--images", str(images), "--labels", str(labels), "--format", "yolo",
           "--um-per-px", f"{um_per_px:.5f}", "--detector", str(detector), "--json"]
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)}: exit {run.returncode}: {run.stderr.strip()[-400:]}")
    return json.loads(run.stdout)


def counts(report):
    return report["true_positives"], report["false_positives"], report["false_negatives"]


def in_view_counts(report):
    """(found, false, missed) over the cells clear of the frame edge (`detect-eval`'s `in_view`)."""
    v = report["in_view"]
    return v["expert_found"], v["found"] - v["found_paired"], v["expert"] - v["expert_found"]


def link_frames(frames, out):
    """The frames and their label files, linked into out/images and out/labels."""
    for sub in ("images", "labels"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    for image, label in frames:
        (out / "images" / image.name).symlink_to(image.resolve())
        if label.exists():
            (out / "labels" / label.name).symlink_to(label.resolve())


def text(c):
    return f"{c[0]} / {c[1]} / {c[2]}"


def scores(c):
    found, false, missed = c
    return f"P {found / max(found + false, 1):.3f} R {found / max(found + missed, 1):.3f}"


def measure(args, work):
    root = Path(args.frames)
    binary = Path(args.bin)
    if not binary.exists():
        raise SystemExit(f"{binary}: no such binary (cargo build --release, or --bin)")
    for needed in [root / "images" / "val", root / "images" / "train", *args.detector]:
        if not needed.exists():
            raise SystemExit(f"{needed}: not found")
    squeezed = {d: squeezed_manifest(d, work) for d in args.detector}
    rows, totals = [], {d: np.zeros((5, 3), int) for d in args.detector}
    for n, source in enumerate(SOURCES):
        um = scale_of(root, source.size) * (2 if source.halve else 1)
        folder = work / f"source{n}"
        mosaics, used = build_mosaics(frames_of_size(root, "val", source.size), source, folder / "mosaics",
                                      args.limit)
        if not mosaics:
            continue
        link_frames(used, folder / "frames")
        field_um = max(mosaics[0].tile_w, mosaics[0].tile_h) * source.k * um
        print(f"{source.label}: {len(mosaics)} mosaics of {field_um:.0f} µm at {um:.4f} µm/px", file=sys.stderr)
        for d in args.detector:
            images, labels = folder / "mosaics" / "images", folder / "mosaics" / "labels"
            now = detect_eval(binary, images, labels, um, d)
            cells = [counts(detect_eval(binary, images, labels, um, squeezed[d])), counts(now),
                     whole_cell_counts(now, mosaics)]
            if source.halve:  # the same cells as the row before it: one by one and pooled there
                cells += [None, None]
            else:
                single = detect_eval(binary, folder / "frames" / "images", folder / "frames" / "labels", um, d)
                cells += [counts(single), in_view_counts(single)]
                totals[d] += np.array(cells)
            rows.append((f"{source.label}, {len(mosaics)} × {field_um:.0f} µm", f"{um:.4f}", d.stem, cells))
    return rows, totals


def print_table(rows, totals):
    print("| frames side by side | µm/px | detector | squeezed | now | now, cells whole in their frame | "
          "the frames one by one | one by one, cells clear of the frame edge |")
    print("|---|---|---|---|---|---|---|---|")
    for frames, um, detector, cells in rows:
        shown = " | ".join(text(c) if c is not None else "" for c in cells)
        print(f"| {frames} | {um} | {detector} | {shown} |")
    for detector, t in totals.items():
        shown = " | ".join(f"{text(c)} ({scores(c)})" for c in t)
        print(f"| pooled (the binned row left out) | | {detector.stem} | {shown} |")


def main(argv=None):
    args = parse_args(argv)
    if args.work:
        work = Path(args.work)
        if work.exists():
            raise SystemExit(f"{work}: already exists; name a new folder")
        work.mkdir(parents=True)
        print_table(*measure(args, work))
        return
    work = Path(tempfile.mkdtemp(prefix="wide-fields-"))
    try:
        print_table(*measure(args, work))
    finally:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
