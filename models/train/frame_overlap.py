"""Which BCCD frames TXL-PBC holds, and so which frames the white-cell detector never saw.

TXL-PBC re-annotates BCCD frames, as they are (640x480) and as the BCD set's copies (stretched to 416x416,
flipped, turned, cropped and recoloured). The detector trains on TXL-PBC's train split, so a BCCD frame
with a copy there is not unseen, and a TXL-PBC val frame that copies the same BCCD frame as a training
frame is not unseen either. This script finds the copies by their pictures, not their names: each frame is
compared in grey at 64x64, in its eight flips and quarter turns, with crops (100 to 50 % of the side,
offsets on a 5x5 grid) of the BCCD frames most like it at 32x32, by normalized cross-correlation.

  python models/train/frame_overlap.py --out /tmp/overlap   (--bccd, --txl: ../shared/data/frames/...)

writes /tmp/overlap/overlap.tsv (every TXL-PBC frame, the BCCD frame most like it and the score) and
folders of links that `marrowscope detect-eval` reads: bccd-unseen/ (BCCD frames no TXL-PBC frame
copies, nor a near copy of them inside BCCD), bccd-val-only/ (copied only into val) and txl-val-unshared/
(val frames whose BCCD frame, if any, has no copy in train), each with images/ and labels/.
"""
import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from common import DEFAULT_SHARED

# Copies of BCCD frames in TXL-PBC score 0.78 to 1.00 at 64x64; frames of its other sources (PBC, Raabin,
# other microscopes) at most 0.73 against any BCCD crop. Scores from SAME on are taken as the same field:
# a little under that gap, so that a doubt counts a frame as seen rather than unseen.
SAME = 0.72
CANDIDATES = 8  # BCCD frames (most like a frame at 32x32) searched crop by crop
SCALES = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bccd", default=str(DEFAULT_SHARED / "frames" / "bccd"),
                    help="BCCD folder (JPEGImages/, Annotations/)")
    ap.add_argument("--txl", default=str(DEFAULT_SHARED / "frames" / "txl-pbc"),
                    help="TXL-PBC folder (images/{train,val}, labels/val)")
    ap.add_argument("--out", required=True, help="folder for overlap.tsv and the folders of links")
    ap.add_argument("--same", type=float, default=SAME, help=f"score from which two frames show one field ({SAME})")
    return ap.parse_args(argv)


def grey(path, side):
    """The frame in grey, stretched to side x side."""
    with Image.open(path) as im:
        return np.asarray(im.convert("L").resize((side, side), Image.BILINEAR), np.float32)


def unit_rows(x):
    """Rows less their mean, scaled to length 1: their dot products are correlations."""
    x = x - x.mean(-1, keepdim=True)
    return x / (x.norm(dim=-1, keepdim=True) + 1e-6)


def dihedral(a):
    """The eight flips and quarter turns of a square picture."""
    turns = [np.rot90(a, k) for k in range(4)]
    return [np.ascontiguousarray(v) for t in turns for v in (t, t[:, ::-1])]


def crop_grid(side=64):
    """Sampling grids for the crops searched: each scale of the side at 5x5 offsets (one for the whole)."""
    thetas = []
    for f in SCALES:
        offsets = np.linspace(-(1 - f), 1 - f, 5) if f < 1 else [0.0]
        thetas += [[[f, 0, ox], [0, f, oy]] for ox in offsets for oy in offsets]
    theta = torch.tensor(thetas, dtype=torch.float32)
    return F.affine_grid(theta, (len(thetas), 1, side, side), align_corners=False)


def images_in(folder):
    if not Path(folder).is_dir():
        raise SystemExit(f"{folder}: no such folder")
    images = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise SystemExit(f"{folder}: no frames (.jpg, .jpeg, .png)")
    return images


class Library:
    """The BCCD frames, ready to be searched."""

    def __init__(self, paths):
        self.paths = paths
        self.full = torch.tensor(np.stack([grey(p, 128) for p in paths]))[:, None]
        self.small = unit_rows(F.avg_pool2d(self.full, 4).flatten(1))
        self.grid = crop_grid()

    def best_copy(self, path, skip=None):
        """(index, score) of the BCCD frame whose crop, flip or turn is most like the frame at `path`."""
        views = np.stack(dihedral(grey(path, 64)))
        fine = unit_rows(torch.tensor(views).flatten(1))
        coarse = unit_rows(F.avg_pool2d(torch.tensor(views)[:, None], 2).flatten(1))
        likeness = (coarse @ self.small.T).max(0).values
        if skip is not None:
            likeness[skip] = -2.0
        best, score = -1, -1.0
        for j in likeness.topk(min(CANDIDATES, len(self.paths))).indices.tolist():
            if j == skip:
                continue
            crops = F.grid_sample(self.full[j:j + 1].expand(len(self.grid), -1, -1, -1), self.grid,
                                  align_corners=False)
            s = float((unit_rows(crops.flatten(1)) @ fine.T).max())
            if s > score:
                best, score = j, s
        return best, score


def near_copies(library, same):
    """Pairs of BCCD frames that show one field (BCCD holds a few): {index: {indices}}."""
    groups = {}
    for i, path in enumerate(library.paths):
        j, score = library.best_copy(path, skip=i)
        if j >= 0 and score >= same:
            groups.setdefault(i, set()).add(j)
            groups.setdefault(j, set()).add(i)
    return groups


def with_near_copies(indices, groups):
    out = set(indices)
    for i in indices:
        out |= groups.get(i, set())
    return out


def clear_links(folder):
    """Removes the links an earlier run left in folder/images and folder/labels, so that no frame of
    another run's lists is scored; refuses a folder that holds anything else."""
    for sub in ("images", "labels"):
        entries = list((folder / sub).iterdir()) if (folder / sub).is_dir() else []
        if any(not e.is_symlink() for e in entries):
            raise SystemExit(f"{folder / sub}: holds files that are not links from this script; choose another --out")
        for e in entries:
            e.unlink()


def link_frames(folder, frames, label_of):
    """folder/images and folder/labels: links to the frames and their label files (and nothing else)."""
    clear_links(folder)
    for sub in ("images", "labels"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for frame in frames:
        for target, link_dir in ((frame, "images"), (label_of(frame), "labels")):
            link = folder / link_dir / target.name
            if target.exists():
                os.symlink(target.resolve(), link)


def main(argv=None):
    args = parse_args(argv)
    bccd, txl, out = Path(args.bccd), Path(args.txl), Path(args.out)
    library = Library(images_in(bccd / "JPEGImages"))
    print(f"frame_overlap: {len(library.paths)} BCCD frames", flush=True)
    rows, copied = [], {"train": set(), "val": set()}
    for split in ("train", "val"):
        frames = images_in(txl / "images" / split)
        for n, path in enumerate(frames, 1):
            j, score = library.best_copy(path)
            rows.append((split, path, j, score))
            if score >= args.same:
                copied[split].add(j)
            if n % 100 == 0 or n == len(frames):
                print(f"  TXL-PBC {split}: {n}/{len(frames)} frames compared", flush=True)
    groups = near_copies(library, args.same)
    in_train = with_near_copies(copied["train"], groups)
    val_only = with_near_copies(copied["val"], groups) - in_train
    unseen = [i for i in range(len(library.paths)) if i not in in_train and i not in val_only]

    out.mkdir(parents=True, exist_ok=True)
    with open(out / "overlap.tsv", "w") as f:
        f.write("split\ttxl_frame\tbccd_frame\tscore\tcopy\n")
        for split, path, j, score in rows:
            f.write(f"{split}\t{path.name}\t{library.paths[j].name}\t{score:.3f}\t{int(score >= args.same)}\n")
    voc = lambda p: bccd / "Annotations" / (p.stem + ".xml")  # noqa: E731
    yolo = lambda p: txl / "labels" / "val" / (p.stem + ".txt")  # noqa: E731
    link_frames(out / "bccd-unseen", [library.paths[i] for i in unseen], voc)
    link_frames(out / "bccd-val-only", [library.paths[i] for i in sorted(val_only)], voc)
    shared = [p for s, p, j, score in rows if s == "val" and score >= args.same and j in in_train]
    unshared = [p for s, p, _, _ in rows if s == "val" and p not in shared]
    link_frames(out / "txl-val-unshared", unshared, yolo)
    print(f"BCCD frames copied into TXL-PBC train: {len(in_train)}, into val only: {len(val_only)}, "
          f"nowhere: {len(unseen)} (near copies inside BCCD: {len(groups)} frames)")
    print(f"TXL-PBC val frames that copy a BCCD frame also copied into train: {len(shared)} of "
          f"{len(shared) + len(unshared)}")
    print(f"wrote {out / 'overlap.tsv'} and the folders bccd-unseen, bccd-val-only, txl-val-unshared")


if __name__ == "__main__":
    sys.exit(main())
