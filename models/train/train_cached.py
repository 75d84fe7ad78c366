#!/usr/bin/env python3
"""Fast CPU training: freeze the ImageNet-pretrained EfficientNet-Lite0 trunk (stem + blocks 0-10,
stride 16, 112 channels) and cache its features for a few augmented views of every training image,
then train the upper part (blocks 11.. + head) on the cached features. On 2 shared CPU cores this is
~8x cheaper per training sample than end-to-end fine-tuning (train.py), which is what made the
shipped model possible in the time available. The saved model.pt is the complete network (frozen trunk
+ trained upper part) and exports with export.py like any train.py run.

  # 1) cache (val/test once, then augmented training views; stops after --views views or --minutes)
  train_cached.py cache --views 2
  # 2) train an upper part (optionally distilled from a trained teacher run)
  train_cached.py train --arch effl0 --minutes 15 --out runs/effl0
  train_cached.py train --arch effl0t --teacher runs/effl0 --minutes 15 --out runs/effl0t
"""
import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import train as T  # noqa: E402

TRUNK = 11  # blocks 0..10 frozen


def get_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cmd", choices=["cache", "train"])
    ap.add_argument("--data", action="append", metavar="NAME=DIR")
    ap.add_argument("--zoom", action="append", metavar="NAME=F")
    ap.add_argument("--classes")
    ap.add_argument("--max-per-class", type=int)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--views", type=int, default=2, help="augmented views per training image to cache")
    ap.add_argument("--feat-dir", default=str(Path(__file__).resolve().parent / "cache" / "feats"))
    ap.add_argument("--cache", default=str(Path(__file__).resolve().parent / "cache"))
    ap.add_argument("--arch", default="effl0", choices=["effl0", "effl0t", "effl0t11"])
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--wd", type=float, default=1e-4)
    ap.add_argument("--smoothing", type=float, default=0.1)
    ap.add_argument("--teacher")
    ap.add_argument("--init", help="run dir whose model.pt initializes the model (continued training)")
    ap.add_argument("--kd-alpha", type=float, default=0.7)
    ap.add_argument("--eval-minutes", type=float, default=4.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out")
    return ap.parse_args(argv)


def trunk_forward(m, x):
    x = m._swish(m._bn0(m._conv_stem(x)))
    for b in m._blocks[:TRUNK]:
        x = b(x)
    return x


def upper_forward(model, arch, h):
    if arch == "effl0":
        n = len(model._blocks)
        for i in range(TRUNK, n):
            h = model._blocks[i](h, drop_connect_rate=model._global_params.drop_connect_rate * i / n)
        h = model._swish(model._bn1(model._conv_head(h)))
        h = model._avg_pooling(h).flatten(1)
        return model._fc(model._dropout(h))
    n = len(model.blocks)
    for i in range(TRUNK, n):
        h = model.blocks[i](h, drop_connect_rate=model.drop_connect_rate * i / n)
    h = model.head(h)
    return model.fc(model.drop(model.pool(h).flatten(1)))


def upper_params(model, arch):
    if arch == "effl0":
        mods = list(model._blocks[TRUNK:]) + [model._conv_head, model._bn1, model._fc]
    else:
        mods = list(model.blocks[TRUNK:]) + [model.head, model.fc]
    return mods, [p for mm in mods for p in mm.parameters()]


def setup(a):
    sources = common.parse_sources(a.data, a.zoom)
    classes = a.classes.split(",") if a.classes else None
    items, classes = common.scan(sources, classes, a.max_per_class)
    by = {sp: [it for it in items if it["split"] == sp] for sp in ("train", "val", "test")}
    return sources, classes, by


def cmd_cache(a):
    import torch
    torch.set_num_threads(a.threads)
    sources, classes, by = setup(a)
    fd = Path(a.feat_dir); fd.mkdir(parents=True, exist_ok=True)
    m = common.build_model("effl0", len(classes)); m.eval()
    (fd / "info.json").write_text(json.dumps({"classes": classes, "size": a.size,
                                              "sources": [[n, str(p), z] for n, p, z in sources],
                                              "counts": {k: len(v) for k, v in by.items()},
                                              "max_per_class": a.max_per_class}))

    def run(imgs, aug_seed, path):
        if path.exists():
            print("exists", path); return
        t = time.time()
        out = np.zeros((len(imgs), 112, a.size // 16, a.size // 16), np.float16)
        gen = torch.Generator().manual_seed(aug_seed) if aug_seed is not None else None
        with torch.no_grad():
            for i in range(0, len(imgs), 64):
                x = T.to_input(imgs[i:i + 64])
                if gen is not None:
                    x = T.augment(x, gen)
                out[i:i + 64] = trunk_forward(m, T.norm(x)).numpy().astype(np.float16)
        np.save(path, out)
        print(f"cached {path.name} {out.shape} in {time.time() - t:.0f}s", flush=True)

    for sp in ("val", "test"):
        run(common.preload(by[sp], a.size, a.cache or None), None, fd / f"{sp}.npy")
    tr = common.preload(by["train"], a.size, a.cache or None)
    for v in range(a.views):
        run(tr, 1000 + v, fd / f"train_v{v}.npy")


def cmd_train(a):
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    sources, classes, by = setup(a)
    fd = Path(a.feat_dir)
    views = sorted(fd.glob("train_v*.npy"))
    assert views, "run `train_cached.py cache` first"
    Ftr = [np.load(v, mmap_mode="r") for v in views]
    Fv = torch.from_numpy(np.load(fd / "val.npy").astype(np.float32))
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    log = open(out / "train.log", "a")

    def say(*msg):
        s = " ".join(str(x) for x in msg)
        print(s, flush=True); log.write(s + "\n"); log.flush()

    say(f"arch {a.arch}, {len(views)} cached views, train {len(by['train'])} val {len(by['val'])}")
    Ftr = [np.asarray(f) for f in Ftr]
    ytr = np.array([classes.index(it["cls"]) for it in by["train"]])
    wts = common.balanced_weights(by["train"], classes)

    model = common.build_model(a.arch, len(classes))
    if a.init:
        model.load_state_dict(torch.load(Path(a.init) / "model.pt", map_location="cpu"))
    model.eval()
    mods, params = upper_params(model, a.arch)
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=a.lr, weight_decay=a.wd)
    teacher = None
    if a.teacher:
        tm = json.loads((Path(a.teacher) / "meta.json").read_text())
        teacher = common.build_model(tm["arch"], len(classes), pretrained=False)
        teacher.load_state_dict(torch.load(Path(a.teacher) / "model.pt", map_location="cpu"))
        teacher.eval(); tarch = tm["arch"]
        say(f"distilling from {a.teacher} ({tarch})")
    rng = np.random.default_rng(a.seed)
    yv = np.array([classes.index(it["cls"]) for it in by["val"]])

    def val_eval():
        for mm in mods:
            mm.eval()
        with torch.no_grad():
            lg = torch.cat([upper_forward(model, a.arch, Fv[i:i + 256]) for i in range(0, len(Fv), 256)]).numpy()
        return T.evaluate(lg, by["val"], classes)

    t0 = time.time(); step = 0; last_eval = t0; hist = []; best = -1
    warm = 50
    while True:
        frac = (time.time() - t0) / (a.minutes * 60)
        if frac >= 1:
            break
        lr = a.lr * min(1.0, (step + 1) / warm) * 0.5 * (1 + math.cos(math.pi * frac))
        for g in opt.param_groups:
            g["lr"] = lr
        idx = rng.choice(len(wts), size=a.batch, p=wts)
        vv = rng.integers(0, len(Ftr), a.batch)
        h = torch.from_numpy(np.stack([Ftr[v][i] for v, i in zip(vv, idx)]).astype(np.float32))
        # feature-level dihedral augmentation (flips / transposes of the stride-16 map)
        if rng.random() < 0.5:
            h = h.flip(3)
        if rng.random() < 0.5:
            h = h.flip(2)
        if rng.random() < 0.5:
            h = h.transpose(2, 3)
        y = torch.from_numpy(ytr[idx])
        for mm in mods:
            mm.train()
        logits = upper_forward(model, a.arch, h)
        loss = F.cross_entropy(logits, y, label_smoothing=a.smoothing)
        if teacher is not None:
            with torch.no_grad():
                tl = upper_forward(teacher, tarch, h) if True else None
            kd = F.kl_div(F.log_softmax(logits / 2, 1), F.softmax(tl / 2, 1), reduction="batchmean") * 4
            loss = (1 - a.kd_alpha) * loss + a.kd_alpha * kd
        opt.zero_grad(); loss.backward(); opt.step(); step += 1
        if step % 10 == 0:
            say(f"step {step} loss {loss.item():.3f} lr {lr:.2e} {(time.time() - t0) / step * 1000 / a.batch:.1f} ms/sample")
        if time.time() - last_eval > a.eval_minutes * 60:
            r = val_eval(); last_eval = time.time()
            hist.append({"step": step, "minutes": (time.time() - t0) / 60, "score": r["score"]})
            say(f"VAL step {step}: " + " ".join(f"{k}={v['macro_f1']:.4f}/{v['accuracy']:.4f}"
                                                for k, v in r.items() if isinstance(v, dict)))
    if teacher is not None:
        teacher.eval()
    r = val_eval()
    say(f"VAL final step {step}: " + " ".join(f"{k}={v['macro_f1']:.4f}/{v['accuracy']:.4f}"
                                              for k, v in r.items() if isinstance(v, dict)))
    torch.save(model.state_dict(), out / "model.pt")
    import csv
    with open(out / "split.csv", "w", newline="") as f:
        w = csv.writer(f); w.writerow(["split", "source", "class", "file"])
        for sp in ("val", "test"):
            for it in by[sp]:
                w.writerow([sp, it["source"], it["cls"], Path(it["path"]).name])
    meta = {"arch": a.arch, "size": a.size, "classes": classes,
            "params": sum(p.numel() for p in model.parameters()),
            "trainable_params": sum(p.numel() for p in params), "frozen_trunk_blocks": TRUNK,
            "sources": [[n, str(p), z] for n, p, z in sources], "steps": step, "batch": a.batch,
            "samples": step * a.batch, "views": len(views),
            "epochs": step * a.batch / len(by["train"]), "train_minutes": (time.time() - t0) / 60,
            "lr": a.lr, "teacher": a.teacher, "init": a.init, "max_per_class": a.max_per_class, "seed": a.seed,
            "val_final": r, "history": hist, "counts": {k: len(v) for k, v in by.items()}}
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    say(f"done {step} steps")


if __name__ == "__main__":
    a = get_args()
    cmd_cache(a) if a.cmd == "cache" else cmd_train(a)
