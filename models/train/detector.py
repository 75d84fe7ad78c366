#!/usr/bin/env python3
"""Train the small white-cell detector (issue 4) and export it for tract.

A centre-point detector (CenterNet-style, one class): the whole frame is resized to SIZE x SIZE, a
small CNN predicts at stride 8 a white-cell centre heat map, the offset of the centre inside its grid
cell and the box's log width and height. It is trained on TXL-PBC's training frames (four sources at
different magnifications, which one fixed scale of the classical localizer cannot fit); a part of
them chosen by file-name hash is held back to pick the heat-map threshold. TXL-PBC's val frames are
never seen: `marrowscope detect-eval --detector` measures on them.

  detector.py --out runs/det [--epochs 60] [--size 256] [--ship models/]
  detector.py --out /tmp/d --epochs 1 --limit 24      # smoke test (CI)
  detector.py --out runs/det --device cuda            # model on the GPU, data prepared on the CPU

Writes OUT/detector.pt, OUT/BASENAME.onnx and OUT/BASENAME.ron (BASENAME: --basename, default
wbc-detector; the manifest holds input size, stride, threshold, sha256), and with --ship copies the
two model files there.
"""
import argparse
import copy
import hashlib
import json
import math
import shutil
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DEFAULT_SHARED  # noqa: E402
import frame_overlap  # noqa: E402
from manifest import sha256  # noqa: E402

STRIDE = 8  # the heat map's grid step in input pixels, unless --head-stride says otherwise
EDGE_REACH = 0.01  # a box within this share of the picture's side of its edge counts as cut by the edge
# The widest field of view among TXL-PBC's training frames, in µm along the longer side: its 640 x 480 frames
# (BCCD's), whose red-cell boxes have a median side of 100 px, 7.5 µm at 0.075 µm/px (its other sources' frames
# show 34-40 µm). The network learns to read such a field at --size; marrowscope reads a frame of a wider field
# at a larger input, so that cells keep the size the network learnt (manifest `field_um`).
TRAINED_FIELD_UM = 48.0
WBC = 0
OTHER_CLASSES = (1, 2)  # TXL-PBC's red cells and platelets: the heat maps --others teaches beside the white cells'


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", default=str(DEFAULT_SHARED / "frames" / "txl-pbc"),
                    help="TXL-PBC layout: images/train, labels/train (YOLO, class 0 = WBC)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--holdout", type=float, default=0.12, help="share of training frames kept for the threshold")
    ap.add_argument("--fields", action="store_true",
                    help="hold back whole fields: TXL-PBC frames that copy one BCCD frame (as it is, or flipped, "
                         "turned, cropped; frame_overlap.py) are held back or trained on together, so no "
                         "held-back frame shows a field seen in training; off: by each frame's own name, as the "
                         "shipped detectors were")
    ap.add_argument("--bccd", default=str(DEFAULT_SHARED / "frames" / "bccd"),
                    help="BCCD folder (JPEGImages/) that --fields looks the copies up in")
    ap.add_argument("--limit", type=int, help="use only this many frames (smoke test)")
    ap.add_argument("--train-share", type=share_of_frames, default=1.0,
                    help="train on this share of the frames not held back, chosen by file-name hash "
                         "independently of the hold-back (a learning curve: how recall grows with data); 1: all")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                    help="where the model trains and predicts; frames are always prepared on the CPU, and the "
                         "checkpoint and the ONNX export are written from a CPU copy")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ship", help="copy BASENAME.onnx and .ron here (e.g. models/)")
    ap.add_argument("--basename", default="wbc-detector", help="file name of the exported model and manifest")
    ap.add_argument("--name", default="marrowscope-wbc-centre-detector", help="the detector's name in its manifest")
    ap.add_argument("--min-precision", type=float, default=0.96,
                    help="threshold: the lowest whose held-back precision reaches this (recall first)")
    ap.add_argument("--checkpoint", help="skip training: pick the threshold for this detector.pt and export")
    ap.add_argument("--giou", type=float, default=0.0,
                    help="weight of a GIoU loss on the decoded boxes (beside L1 on offset and log size)")
    ap.add_argument("--crop-share", type=float, default=0.5,
                    help="share of training samples cut to a zoom-in crop (which cuts cells at its edges)")
    ap.add_argument("--keep-visible", type=float, default=0.4,
                    help="a cell the crop cuts stays a target while this share of its box is in view (the "
                         "experts box even thin slivers of cells at the frame edge)")
    ap.add_argument("--ignore-cut", action="store_true",
                    help="a cell the crop cuts below --keep-visible is left out of the heat-map loss where it "
                         "is in view, instead of being taught as background")
    ap.add_argument("--edge-weight", type=float, default=1.0,
                    help="weight of the heat map's peak loss for cells whose box reaches the picture's edge "
                         "(slivers at the frame edge); 1 weighs them as every other cell")
    ap.add_argument("--stem", type=int, choices=(2, 4), default=2,
                    help="2: 3x3 convolutions down to stride 4 (shipped); 4: one 4x4 stride-4 patch "
                         "convolution (about half the multiply-adds, for small boards)")
    ap.add_argument("--head-stride", type=int, choices=(4, 8), default=STRIDE,
                    help="grid step of the heat map and box heads in input pixels: 8 (shipped: a 20x20 grid at "
                         "160 px), or 4 (a 40x40 grid: the stride-4 features are merged in too, for finer "
                         "centres of small and cut cells); the manifest records it")
    ap.add_argument("--separable", action="store_true",
                    help="the second 3x3 convolution at stride 8 and the 3x3 mixing the merged features are "
                         "depthwise-separable (a 3x3 per channel, then a 1x1 across channels): about a fifth "
                         "less network time in tract; tried with the fast network and not shipped (MODEL_CARD)")
    ap.add_argument("--ema", type=float, default=0.0,
                    help="also keep an exponential moving average of the weights (and batch-norm statistics) "
                         "with this decay per step, e.g. 0.999, and score, save and export it instead of the "
                         "last weights; 0: off")
    ap.add_argument("--pad", type=int, default=0,
                    help="input pixels of mirrored frame on each side: the frame is stretched to SIZE - 2 PAD "
                         "and reflected outwards, so a cell cut by the frame edge is seen whole-shaped; swept "
                         "2026-12-06 and not shipped (MODEL_CARD); the manifest records it and marrowscope "
                         "refuses such a detector; 0: off")
    ap.add_argument("--others", type=float, default=0.0,
                    help="weight of two more heat maps, red-cell and platelet centres (TXL-PBC's classes 1 and "
                         "2), learnt beside the white cells' so that the network is told what the cells it must "
                         "not box are; the exported model gives the white-cell heat map and boxes alone, as "
                         "before; 0: off")
    args = ap.parse_args(argv)
    if args.others < 0:
        ap.error(f"--others {args.others} must be at least 0")
    if not 0 <= args.pad < args.size // 4:
        ap.error(f"--pad {args.pad} must be at least 0 and under a quarter of --size ({args.size})")
    return args


# ---------------------------------------------------------------- data

def yolo_labelled(label_file):
    """Every box of one YOLO label file as (class, cx, cy, w, h), normalized; none when the file is missing."""
    rows = []
    if label_file.exists():
        for n, line in enumerate(label_file.read_text(encoding="utf-8-sig").splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 5:
                raise SystemExit(f"{label_file}:{n}: expected 'class cx cy w h'")
            try:
                rows.append([int(parts[0])] + [float(v) for v in parts[1:]])
            except ValueError:
                raise SystemExit(f"{label_file}:{n}: expected numbers, got '{line.strip()}'") from None
    return np.array(rows, np.float32).reshape(-1, 5)


def yolo_boxes(label_file):
    """White-cell boxes of one YOLO label file as (cx, cy, w, h), normalized."""
    rows = yolo_labelled(label_file)
    return rows[rows[:, 0] == WBC, 1:]


def other_boxes(label_file):
    """The red-cell and platelet boxes (OTHER_CLASSES) of one YOLO label file as (class, cx, cy, w, h)."""
    rows = yolo_labelled(label_file)
    return rows[np.isin(rows[:, 0], OTHER_CLASSES)]


def voc_boxes(xml_file):
    """White-cell boxes of a Pascal VOC file as (cx, cy, w, h), normalized."""
    root = ET.parse(xml_file).getroot()
    w = float(root.find("size/width").text)
    h = float(root.find("size/height").text)
    boxes = []
    for obj in root.iter("object"):
        if obj.findtext("name", "").strip().upper() != "WBC":
            continue
        b = obj.find("bndbox")
        x0, y0, x1, y1 = (float(b.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
        boxes.append([(x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w, (y1 - y0) / h])
    return np.array(boxes, np.float32).reshape(-1, 4)


def share_of_frames(text):
    """--train-share: a share in (0, 1]."""
    share = float(text)
    if not 0 < share <= 1:
        raise argparse.ArgumentTypeError(f"{text} is not a share in (0, 1]")
    return share


def name_hash(name):
    """A file name's SHA-1 as a number in [0, 1)."""
    return int(hashlib.sha1(name.encode()).hexdigest()[:8], 16) / 2**32


def held_out(name, share):
    return name_hash(name) < share


def train_subset(train, share):
    """The training frames kept by --train-share: those whose salted name hash is below `share` (salted,
    so which frames are kept does not depend on which were held back); all of them at share 1."""
    if share >= 1:
        return train
    return [f for f in train if name_hash("train-share:" + f[0].name) < share] or train[:1]


def split_frames(frames, holdout, limit=None, field=None):
    """(training frames, held-back frames): held back by the hash of the frame's field, `field[name]`
    (a whole field at once; by default each frame is its own field, named by its file), a quarter of
    them with --limit."""
    field = field or {}
    share = holdout if not limit else 0.25
    held = [f for f in frames if held_out(field.get(f[0].name, f[0].name), share)] or frames[:2]
    return [f for f in frames if f not in held] or frames, held


def fields_of(paths, bccd):
    """{file name: field} for --fields: "bccd:NAME" for each frame that copies BCCD frame NAME (BCCD's own near
    copies of one field named by the first of them); frames that copy none are left out and split_frames
    takes their own names."""
    print(f"detector: looking up which of {len(paths)} frames copy a BCCD frame (--fields)", flush=True)
    library = frame_overlap.Library(frame_overlap.images_in(Path(bccd) / "JPEGImages"))
    near = frame_overlap.near_copies(library, frame_overlap.SAME)
    fields = {}
    for path in paths:
        j, score = library.best_copy(path)
        if score >= frame_overlap.SAME:
            fields[path.name] = "bccd:" + library.paths[min(near.get(j, set()) | {j})].name
    return fields


def hold_back(frames, args):
    """(training frames, held-back frames, fields) as the run's --holdout, --limit, --fields and --train-share
    ask (rescore.py picks the same held-back frames with it)."""
    fields = fields_of([p for p, _ in frames], args.bccd) if args.fields else {}
    train, held = split_frames(frames, args.holdout, args.limit, fields)
    return train_subset(train, args.train_share), held, fields


def label_file(root, split, image):
    return root / "labels" / split / (image.stem + ".txt")


def load_frames(root, split, limit=None):
    images = sorted((root / "images" / split).glob("*.jpg")) + sorted((root / "images" / split).glob("*.png"))
    if not images:
        raise SystemExit(f"no frames in {root / 'images' / split}")
    if limit:
        images = images[:limit]
    return [(p, yolo_boxes(label_file(root, split, p))) for p in images]


def read_rgb(path, longest=None):
    """A frame as HWC uint8; with `longest`, shrunk (antialiased) so its long side is at most that."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        if longest and max(im.size) > longest:
            k = longest / max(im.size)
            im = im.resize((round(im.width * k), round(im.height * k)), Image.BILINEAR)
        return np.asarray(im)


def augment(img, boxes, rng, crop_share=0.5, keep_visible=0.4, others=None):
    """Random zoom-in crop, flips, quarter turns and colour jitter; boxes follow. Returns the picture,
    the target boxes, and the in-view parts of the cells the crop cut below keep_visible (not targets).
    With `others` (class, cx, cy, w, h: cells of OTHER_CLASSES) they are moved alike, kept by the same
    rule, and returned fourth; the random draws are the same with or without them."""
    n_wbc = len(boxes)
    if others is not None:
        boxes = np.concatenate([boxes, others[:, 1:]]).astype(np.float32)
    classes = np.concatenate([np.full(n_wbc, WBC, np.float32), others[:, 0] if others is not None else []])
    h, w = img.shape[:2]
    cut = np.zeros((0, 4), np.float32)
    if rng.random() < crop_share:
        s = rng.uniform(0.55, 1.0)
        cw, ch = int(w * s), int(h * s)
        x0, y0 = rng.integers(0, w - cw + 1), rng.integers(0, h - ch + 1)
        img = img[y0:y0 + ch, x0:x0 + cw]
        px = boxes * [w, h, w, h]
        x_lo, x_hi = np.clip(px[:, 0] - px[:, 2] / 2, x0, x0 + cw), np.clip(px[:, 0] + px[:, 2] / 2, x0, x0 + cw)
        y_lo, y_hi = np.clip(px[:, 1] - px[:, 3] / 2, y0, y0 + ch), np.clip(px[:, 1] + px[:, 3] / 2, y0, y0 + ch)
        keep = ((x_hi - x_lo) * (y_hi - y_lo)) > keep_visible * px[:, 2] * px[:, 3]
        in_view = np.stack([((x_lo + x_hi) / 2 - x0) / cw, ((y_lo + y_hi) / 2 - y0) / ch,
                            (x_hi - x_lo) / cw, (y_hi - y_lo) / ch], 1).astype(np.float32)
        seen = (x_hi - x_lo > 0.5) & (y_hi - y_lo > 0.5)  # more than rounding: half a pixel each way
        boxes, cut, classes = in_view[keep], in_view[~keep & seen & (classes == WBC)], classes[keep]
    n = len(boxes)
    both = np.concatenate([boxes, cut]).reshape(-1, 4)
    if rng.random() < 0.5:
        img, both = img[:, ::-1], both.copy()
        both[:, 0] = 1 - both[:, 0]
    if rng.random() < 0.5:
        img = img[::-1]
        both = both.copy()
        both[:, 1] = 1 - both[:, 1]
    if rng.random() < 0.5:
        img = np.ascontiguousarray(np.transpose(img, (1, 0, 2)))
        both = both[:, [1, 0, 3, 2]]
    boxes, cut = both[:n], both[n:]
    img = img.astype(np.float32)
    gain = rng.uniform(0.8, 1.2, 3) * rng.uniform(0.85, 1.15)
    img = np.clip((img - img.mean()) * rng.uniform(0.8, 1.25) + img.mean(), 0, 255) * gain
    wbc = boxes[classes == WBC]
    if others is None:
        return np.clip(img, 0, 255), wbc, cut
    moved = np.column_stack([classes[classes != WBC], boxes[classes != WBC]]).astype(np.float32).reshape(-1, 5)
    return np.clip(img, 0, 255), wbc, cut, moved


def to_input(img, size, pad=0):
    """HWC 0..255 -> 1x3xSxS 0..1 tensor, stretched to (size - 2 pad) squared (bilinear) and mirrored
    outwards by pad pixels on each side."""
    t = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32)).permute(2, 0, 1)[None] / 255.0
    inner = size - 2 * pad
    t = F.interpolate(t, size=(inner, inner), mode="bilinear", align_corners=False, antialias=True)
    return F.pad(t, (pad, pad, pad, pad), mode="reflect") if pad else t


def into_padded(boxes, size, pad):
    """Boxes (cx, cy, w, h, 0..1 of the frame) as fractions of the padded input (see to_input)."""
    if not pad:
        return boxes
    k = (size - 2 * pad) / size
    b = np.asarray(boxes, np.float32).reshape(-1, 4) * k
    b[:, :2] += pad / size
    return b


def into_padded_labelled(rows, size, pad):
    """into_padded for (class, cx, cy, w, h) rows."""
    return np.column_stack([rows[:, 0], into_padded(rows[:, 1:], size, pad)]).astype(np.float32).reshape(-1, 5)


def out_of_padded(v, pad_share):
    """A coordinate (0..1 of the padded input) as a fraction of the frame; pad_share = pad / size."""
    return (v - pad_share) / (1 - 2 * pad_share)


def ignored_cells(cut, grid):
    """Grid cells (1) whose centres lie in the in-view part of a cut cell (boxes cx, cy, w, h, 0..1),
    within half a cell: left out of the heat map's background loss."""
    mask = np.zeros((grid, grid), np.float32)
    centres = (np.arange(grid) + 0.5) / grid
    for cx, cy, w, h in cut:
        xs = np.abs(centres - cx) <= w / 2 + 0.5 / grid
        ys = np.abs(centres - cy) <= h / 2 + 0.5 / grid
        mask[np.ix_(ys, xs)] = 1.0
    return mask


def at_edge(boxes):
    """Which boxes (cx, cy, w, h, 0..1) reach within EDGE_REACH of the picture's edge."""
    b = np.asarray(boxes, np.float32).reshape(-1, 4)
    lo = np.minimum(b[:, 0] - b[:, 2] / 2, b[:, 1] - b[:, 3] / 2)
    hi = np.maximum(b[:, 0] + b[:, 2] / 2, b[:, 1] + b[:, 3] / 2)
    return (lo <= EDGE_REACH) | (hi >= 1 - EDGE_REACH)


def peak_weights(boxes, idx, grid, edge_weight):
    """Weight of each grid cell's peak loss: edge_weight at the centres (`idx`, from targets) of boxes at
    the picture's edge, 1 elsewhere (a later box's centre in the same grid cell overrides an earlier one's)."""
    weights = np.ones(grid * grid, np.float32)
    for i, edge in zip(idx, at_edge(boxes)):
        weights[i] = edge_weight if edge else 1.0
    return weights.reshape(grid, grid)


def targets(boxes, grid):
    """Heat map (Gaussian per centre), and per-centre index, offset and log size (grid units)."""
    heat = np.zeros((grid, grid), np.float32)
    yy, xx = np.mgrid[:grid, :grid]
    idx, reg = [], []
    for cx, cy, w, h in boxes:
        gx, gy, gw, gh = cx * grid, cy * grid, w * grid, h * grid
        ix, iy = min(int(gx), grid - 1), min(int(gy), grid - 1)
        sx, sy = max(gw / 6, 0.7), max(gh / 6, 0.7)
        heat = np.maximum(heat, np.exp(-((xx - ix) ** 2 / (2 * sx * sx) + (yy - iy) ** 2 / (2 * sy * sy))))
        idx.append(iy * grid + ix)
        reg.append([gx - ix, gy - iy, math.log(max(gw, 0.5)), math.log(max(gh, 0.5))])
    return heat, idx, reg


def other_heat(others, grid):
    """Heat maps of the other cells' centres (others: class, cx, cy, w, h), one per OTHER_CLASSES, as
    `targets` draws the white cells'."""
    return np.stack([targets(others[others[:, 0] == c, 1:], grid)[0] for c in OTHER_CLASSES])


def batch_of(items, size, rng, train, crop_share=0.5, keep_visible=0.4, ignore_cut=False, edge_weight=1.0, pad=0,
             stride=STRIDE):
    """Inputs, heat maps, centre indices and box targets of a batch, on a grid of step `stride`; with
    ignore_cut the grid cells left out of the background loss (see augment and ignored_cells; else None);
    with an edge_weight other than 1 the weights of the peaks' loss (see peak_weights; else None). Items
    are (picture, white-cell boxes) or (picture, white-cell boxes, other boxes); with the other boxes the
    batch's heat maps of the other classes come last (see other_heat; else None)."""
    grid = size // stride
    xs, heats, idxs, regs, ignores, weights, others_heat = [], [], [], [], [], [], []
    for img, boxes, *rest in items:
        others = rest[0] if rest else None
        cut = np.zeros((0, 4), np.float32)
        if train and others is not None:
            img, boxes, cut, others = augment(img, boxes, rng, crop_share, keep_visible, others)
        elif train:
            img, boxes, cut = augment(img, boxes, rng, crop_share, keep_visible)
        if others is not None:
            others_heat.append(other_heat(into_padded_labelled(others, size, pad), grid))
        xs.append(to_input(img, size, pad))
        h, i, r = targets(into_padded(boxes, size, pad), grid)
        heats.append(h)
        idxs.append(i)
        regs.append(r)
        if ignore_cut:
            ignores.append(ignored_cells(into_padded(cut, size, pad), grid))
        if edge_weight != 1.0:
            weights.append(peak_weights(boxes, i, grid, edge_weight))
    ignore = torch.from_numpy(np.stack(ignores)) if ignore_cut else None
    weight = torch.from_numpy(np.stack(weights)) if edge_weight != 1.0 else None
    aux = torch.from_numpy(np.stack(others_heat)) if others_heat else None
    return torch.cat(xs), torch.from_numpy(np.stack(heats)), idxs, regs, ignore, weight, aux


# ---------------------------------------------------------------- model

def conv(cin, cout, stride=1):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def separable_conv(channels):
    """A 3x3 over each channel on its own, then a 1x1 across channels (both with batch norm and ReLU): the
    receptive field of `conv(channels, channels)` for about a seventh of its multiply-adds."""
    return nn.Sequential(nn.Conv2d(channels, channels, 3, 1, 1, groups=channels, bias=False),
                         nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
                         nn.Conv2d(channels, channels, 1, bias=False), nn.BatchNorm2d(channels),
                         nn.ReLU(inplace=True))


class Detector(nn.Module):
    """Backbone to stride 32, top-down merge back to stride 8, heads: heat, offset x/y, log w/h.
    stem 2: two 3x3 stride-2 convolutions and one more 3x3 reach stride 4 (the costly part: half of
    the multiply-adds run at strides 2 and 4); stem 4: one 4x4 stride-4 convolution on the pixels
    (each output sees its own 4x4 patch), about half the multiply-adds of the whole network. separable: the
    stride-8 block's second convolution and `mix`, the two full 3x3 convolutions at the finest grid, are
    depthwise-separable. head_stride 4: the merge goes on to stride 4 (the stride-4 features through a
    1x1, the stride-8 sum narrowed to `head // 2` channels and doubled), one more 3x3 there, and the heads
    read that 4x grid instead. others: that many more heat maps (other cell classes, see --others), given
    after the white cells' heat map and box (channels 5 on); the ONNX file holds the first five alone
    (WhiteCellsOnly)."""

    def __init__(self, widths=(16, 24, 32, 48, 64), head=32, stem=2, separable=False, head_stride=STRIDE,
                 others=0):
        super().__init__()
        w1, w2, w3, w4, w5 = widths
        if stem == 4:
            self.s2 = nn.Identity()
            self.s4 = nn.Sequential(nn.Conv2d(3, w2, 4, 4, 0, bias=False), nn.BatchNorm2d(w2), nn.ReLU(inplace=True))
        else:
            self.s2 = conv(3, w1, 2)
            self.s4 = nn.Sequential(conv(w1, w2, 2), conv(w2, w2))
        at_stride_8 = separable_conv if separable else (lambda c: conv(c, c))
        self.s8 = nn.Sequential(conv(w2, w3, 2), at_stride_8(w3))
        self.s16 = nn.Sequential(conv(w3, w4, 2), conv(w4, w4))
        self.s32 = nn.Sequential(conv(w4, w5, 2), conv(w5, w5))
        self.lat32 = nn.Conv2d(w5, head, 1)
        self.lat16 = nn.Conv2d(w4, head, 1)
        self.lat8 = nn.Conv2d(w3, head, 1)
        self.mix = at_stride_8(head)
        self.head_stride = head_stride
        out = head
        if head_stride == 4:
            out = head // 2
            self.lat4 = nn.Conv2d(w2, out, 1)
            self.narrow8 = nn.Conv2d(head, out, 1)
            self.mix4 = conv(out, out)
        self.heat = nn.Conv2d(out, 1 + others, 1)
        self.box = nn.Conv2d(out, 4, 1)
        nn.init.constant_(self.heat.bias, -2.2)

    def forward(self, x):
        f4 = self.s4(self.s2(x))
        f8 = self.s8(f4)
        f16 = self.s16(f8)
        f32 = self.s32(f16)
        p16 = self.lat16(f16) + F.interpolate(self.lat32(f32), scale_factor=2.0, mode="nearest")
        p8 = self.lat8(f8) + F.interpolate(p16, scale_factor=2.0, mode="nearest")
        p = self.mix(p8)
        if self.head_stride == 4:
            p = self.mix4(self.lat4(f4) + F.interpolate(self.narrow8(p), scale_factor=2.0, mode="nearest"))
        heat = torch.sigmoid(self.heat(p))
        if heat.shape[1] == 1:  # the white cells' alone: the graph exported before --others
            return torch.cat([heat, self.box(p)], 1)
        return torch.cat([heat[:, :1], self.box(p), heat[:, 1:]], 1)


class WhiteCellsOnly(nn.Module):
    """A Detector's white-cell heat map and box (its first five channels): what marrowscope reads."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)[:, :5]


def detector_of(args):
    """The Detector that detector.py's arguments describe (rescore.py builds the same one)."""
    return Detector(stem=args.stem, separable=args.separable, head_stride=args.head_stride,
                    others=len(OTHER_CLASSES) if args.others else 0)


def focal_loss(pred, gt, ignore=None, peak_weight=None):
    """Penalty-reduced pixel focal loss of CenterNet on the heat map; cells where `ignore` is 1 add
    no background loss; `peak_weight` scales each peak's loss."""
    pred = pred.clamp(1e-4, 1 - 1e-4)
    pos = gt.eq(1).float()
    pos_loss = torch.log(pred) * (1 - pred) ** 2 * pos
    if peak_weight is not None:
        pos_loss = pos_loss * peak_weight
    neg_loss = torch.log(1 - pred) * pred ** 2 * (1 - gt) ** 4 * (1 - pos)
    if ignore is not None:
        neg_loss = neg_loss * (1 - ignore)
    n = pos.sum().clamp(min=1)
    return -(pos_loss.sum() + neg_loss.sum()) / n


def giou_loss(pred, want):
    """Mean 1 - GIoU of boxes given as (offset x, offset y, log w, log h) in grid units around the
    same grid cell (the cell's corner cancels out)."""
    def corners(b):
        w, h = b[:, 2].clamp(max=6.0).exp(), b[:, 3].clamp(max=6.0).exp()
        return b[:, 0] - w / 2, b[:, 1] - h / 2, b[:, 0] + w / 2, b[:, 1] + h / 2
    px0, py0, px1, py1 = corners(pred)
    tx0, ty0, tx1, ty1 = corners(want)
    inter = (torch.min(px1, tx1) - torch.max(px0, tx0)).clamp(min=0) * (torch.min(py1, ty1) - torch.max(py0, ty0)).clamp(min=0)
    union = (px1 - px0) * (py1 - py0) + (tx1 - tx0) * (ty1 - ty0) - inter
    hull = (torch.max(px1, tx1) - torch.min(px0, tx0)) * (torch.max(py1, ty1) - torch.min(py0, ty0))
    giou = inter / union - (hull - union) / hull
    return (1 - giou).mean()


def loss_of(out, heat, idxs, regs, giou_weight=0.0, ignore=None, peak_weight=None, aux=None, aux_weight=0.0):
    """The white cells' heat-map focal loss and box L1 (and GIoU); with `aux` (the other classes' heat
    maps, see other_heat) their focal losses too, each weighed `aux_weight`."""
    loss = focal_loss(out[:, 0], heat, ignore, peak_weight)
    if aux is not None:
        for k in range(aux.shape[1]):
            loss = loss + aux_weight * focal_loss(out[:, 5 + k], aux[:, k])
    box = out[:, 1:5].flatten(2)
    preds, want = [], []
    for b, (i, r) in enumerate(zip(idxs, regs)):
        if i:
            preds.append(box[b][:, torch.tensor(i, device=box.device)].T)
            want.append(torch.tensor(r, dtype=torch.float32, device=box.device))
    if preds:
        p, t = torch.cat(preds), torch.cat(want)
        loss = loss + F.l1_loss(p[:, :2], t[:, :2]) + F.l1_loss(p[:, 2:], t[:, 2:])
        if giou_weight:
            loss = loss + giou_weight * giou_loss(p, t)
    return loss


# ---------------------------------------------------------------- decoding and scoring

def decode(out, threshold, pad_share=0.0):
    """Boxes (x0, y0, x1, y1, score) normalized 0..1 from one output (5 or more x G x G): local maxima of the
    heat map above the threshold (3x3), boxes clipped to the frame, like the Rust decoder. pad_share:
    the input's mirrored margin as a share of its side (see to_input)."""
    heat = out[0:1]
    peaks = (heat == F.max_pool2d(heat[None], 3, 1, 1)[0]) & (heat >= threshold)
    grid = out.shape[-1]
    found = []
    for _, gy, gx in peaks.nonzero().tolist():
        ox, oy, lw, lh = out[1:5, gy, gx].tolist()
        cx, cy = out_of_padded((gx + ox) / grid, pad_share), out_of_padded((gy + oy) / grid, pad_share)
        w, h = (math.exp(min(max(v, -4.0), 6.0)) / grid / (1 - 2 * pad_share) for v in (lw, lh))
        x0, y0, x1, y1 = (min(max(v, 0.0), 1.0) for v in (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
        if x1 > x0 and y1 > y0:
            found.append((x0, y0, x1, y1, float(heat[0, gy, gx])))
    return found


def iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def match(found, truth):
    """Greedy matching by score at IoU >= 0.5: (true positives, false positives, missed)."""
    truth = [(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2) for cx, cy, w, h in truth]
    used = [False] * len(truth)
    tp = 0
    for f in sorted(found, key=lambda f: -f[4]):
        best, k = 0.5, -1
        for j, t in enumerate(truth):
            v = iou(f, t)
            if not used[j] and v >= best:
                best, k = v, j
        if k >= 0:
            used[k] = True
            tp += 1
    return tp, len(found) - tp, len(truth) - tp


def score(outputs, frames, threshold, pad_share=0.0):
    tp = fp = fn = 0
    for out, (_, boxes) in zip(outputs, frames):
        a, b, c = match(decode(out, threshold, pad_share), boxes)
        tp, fp, fn = tp + a, fp + b, fn + c
    p = tp / max(tp + fp, 1)
    r = tp / max(tp + fn, 1)
    return {"precision": p, "recall": r, "f1": 2 * p * r / max(p + r, 1e-9), "tp": tp, "fp": fp, "fn": fn}


@torch.no_grad()
def predict(model, frames, size, pad=0):
    """Outputs (5 x G x G, on the CPU) for frames prepared on the CPU and run where the model is."""
    model.eval()
    device = next(model.parameters()).device
    return [model(to_input(img, size, pad).to(device))[0].cpu() for img, _ in frames]


def pick_threshold(outputs, frames, min_precision, pad_share=0.0):
    """Heat-map threshold for the held-back frames: the lowest (most recall) whose precision is at
    least `min_precision`; when none reaches it, the one with the best F1."""
    scored = [(float(t), score(outputs, frames, float(t), pad_share)) for t in np.arange(0.10, 0.80, 0.025)]
    good = [ts for ts in scored if ts[1]["precision"] >= min_precision]
    if good:
        return good[0]
    return max(scored, key=lambda ts: ts[1]["f1"])


# ---------------------------------------------------------------- export

def on_cpu(model):
    """The model itself when it is on the CPU, else a copy moved there (for saving and export)."""
    if next(model.parameters()).device.type == "cpu":
        return model
    return copy.deepcopy(model).cpu()


def export(model, size, path):
    """The white-cell outputs as ONNX: 5 channels whatever else the model learnt (see WhiteCellsOnly)."""
    model = (WhiteCellsOnly(model) if model.heat.out_channels > 1 else model).eval()
    dummy = torch.zeros(1, 3, size, size)
    torch.onnx.export(model, dummy, str(path), input_names=["frame"], output_names=["heat_box"],
                      opset_version=13, dynamo=False)


def write_manifest(path, name, onnx_path, size, threshold, metrics, pad=0, stride=STRIDE):
    """The detector's RON manifest; a mirrored margin (`pad`, see to_input) is written as `pad`, a field
    marrowscope does not know, so it refuses the detector instead of feeding it unpadded frames."""
    met = ", ".join(f'"{k}": {round(float(v), 4)}' for k, v in metrics.items())
    path.write_text(
        "(\n"
        f'    name: "{name}",\n'
        f'    file: "{onnx_path.name}",\n'
        f'    sha256: "{sha256(onnx_path)}",\n'
        f"    input_size: {size},\n"
        f"    stride: {stride},\n"
        f"    threshold: {threshold},\n"
        f"    field_um: Some({TRAINED_FIELD_UM}),\n"
        + (f"    pad: {pad},\n" if pad else "") +
        f"    metrics: {{{met}}},\n"
        ")\n")


# ---------------------------------------------------------------- main

def others_of(args, image):
    """With --others, a 1-tuple of the training frame's red-cell and platelet boxes (see other_boxes); else ()."""
    return (other_boxes(label_file(Path(args.frames), "train", image)),) if args.others else ()


def main(argv=None):
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    frames = load_frames(Path(args.frames), "train", args.limit)
    train, held, fields = hold_back(frames, args)
    how = f" (whole fields; {len(fields)} frames copy a BCCD frame)" if args.fields else ""
    print(f"detector: {len(train)} training frames, {len(held)} held back for the threshold{how}", flush=True)
    # Kept at most 1.6x the input size (a zoomed-in crop then still shrinks to the input).
    train_px = [(read_rgb(p, int(args.size * 1.6)), b) + others_of(args, p) for p, b in train]
    held_px = [(read_rgb(p), b) for p, b in held]

    device = torch.device(args.device)
    model = detector_of(args)
    if args.checkpoint:
        model.load_state_dict(torch.load(args.checkpoint, map_location="cpu"))
        args.epochs = 0
    model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    steps = args.epochs * math.ceil(len(train_px) / args.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=max(steps, 1), pct_start=0.1)
    # The average of the weights along the last steps (deep copy: draws no random numbers).
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(args.ema), use_buffers=True) if args.ema else None
    kept = ema.module if ema else model  # what is scored, saved and exported
    t0 = time.time()
    for epoch in range(args.epochs):
        model.train()
        order = rng.permutation(len(train_px))
        total = 0.0
        for k in range(0, len(order), args.batch):
            items = [train_px[i] for i in order[k:k + args.batch]]
            x, heat, idxs, regs, ignore, weight, aux = batch_of(items, args.size, rng, True, args.crop_share,
                                                                args.keep_visible, args.ignore_cut, args.edge_weight,
                                                                args.pad, args.head_stride)
            ignore = ignore.to(device) if ignore is not None else None
            weight = weight.to(device) if weight is not None else None
            aux = aux.to(device) if aux is not None else None
            loss = loss_of(model(x.to(device)), heat.to(device), idxs, regs, args.giou, ignore, weight, aux,
                           args.others)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            if ema:
                ema.update_parameters(model)
            total += loss.item() * len(x)
        line = f"epoch {epoch + 1}/{args.epochs} loss {total / len(train_px):.4f} ({time.time() - t0:.0f} s)"
        if (epoch + 1) % 10 == 0 or epoch + 1 == args.epochs:
            s = score(predict(kept, held_px, args.size, args.pad), held_px, 0.3, args.pad / args.size)
            line += f" held-back P {s['precision']:.3f} R {s['recall']:.3f} at 0.3"
        print(line, flush=True)
    if not args.checkpoint:
        torch.save(on_cpu(kept).state_dict(), out / "detector.pt")

    threshold, s = pick_threshold(predict(kept, held_px, args.size, args.pad), held_px, args.min_precision,
                                  args.pad / args.size)
    print(f"threshold {threshold:.3f}: held-back P {s['precision']:.3f} R {s['recall']:.3f} F1 {s['f1']:.3f}")
    onnx_path = out / f"{args.basename}.onnx"
    export(on_cpu(kept), args.size, onnx_path)
    metrics = {"heldback_precision": s["precision"], "heldback_recall": s["recall"], "heldback_f1": s["f1"]}
    write_manifest(out / f"{args.basename}.ron", args.name, onnx_path, args.size, round(threshold, 3), metrics,
                   args.pad, args.head_stride)
    record = {"threshold": threshold, "heldback": s, "epochs": args.epochs, "ema": args.ema,
              "edge_weight": args.edge_weight, "pad": args.pad, "head_stride": args.head_stride, "fields": args.fields,
              "others": args.others,
              "checkpoint": args.checkpoint, "train_frames": len(train), "held_frames": len(held),
              "train_share": args.train_share, "seconds": time.time() - t0}
    (out / "detector.json").write_text(json.dumps(record, indent=1))
    if args.ship:
        ship = Path(args.ship)
        for name in (f"{args.basename}.onnx", f"{args.basename}.ron"):
            shutil.copy(out / name, ship / name)
        print(f"shipped to {ship}")


if __name__ == "__main__":
    main()
