#!/usr/bin/env python3
"""Train the marrowscope cell classifier (PyTorch, CPU is enough).

Data: one or more roots with one folder per Matek class code (images searched recursively, so the
published layout bone_marrow_cell_dataset/<CODE>/<range>/<CODE>_NNNNN.jpg works unchanged).
Default roots: ../shared/data/marrow and ../shared/data/pbc (relative to the repo root).

Examples
  # from ImageNet weights (13 classes of shared/data):
  models/train/.venv/bin/python models/train/train.py --arch effl0 --size 128 --minutes 45 --out models/train/runs/main
  # fine-tune end to end from a train_cached.py run, lower LR for stem + blocks 0-10:
  models/train/.venv/bin/python models/train/train.py --arch effl0t --init models/train/runs/effl0t \
      --lr 1e-3 --trunk-lr-mult 0.3 --minutes 75 --out models/train/runs/e2e_ft
  # the complete public Matek set, all 21 classes:
  models/train/.venv/bin/python models/train/train.py --data matek=/path/to/bone_marrow_cell_dataset --out runs/matek21
then: models/train/export.py --run models/train/runs/main --ship models/
"""
import argparse
import csv
import json
import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def get_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", action="append", metavar="NAME=DIR",
                    help="data root (repeatable); NAME is the source name used in per-source metrics")
    ap.add_argument("--zoom", action="append", metavar="NAME=F",
                    help=f"scale harmonization zoom for a source (centre crop side/F, resized); "
                         f"default {common.MEASURED_ZOOM} (measured), 1.0 otherwise")
    ap.add_argument("--classes", help="comma-separated class codes (default: all class folders found)")
    ap.add_argument("--arch", default="effl0", choices=["effl0", "effl0t", "mnv2_050"])
    ap.add_argument("--no-pretrained", action="store_true")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--epochs", type=float, default=6, help="epochs (ignored when --minutes is given)")
    ap.add_argument("--minutes", type=float, help="train for this wall time (cosine LR over time)")
    ap.add_argument("--epoch-size", type=int, help="samples per epoch (default: number of training images)")
    ap.add_argument("--batch", type=int, default=48)
    ap.add_argument("--lr", type=float, default=1.5e-3)
    ap.add_argument("--wd", type=float, default=1e-4)
    ap.add_argument("--smoothing", type=float, default=0.1)
    ap.add_argument("--teacher", help="run dir of a trained teacher: knowledge distillation (T=2)")
    ap.add_argument("--kd-alpha", type=float, default=0.7)
    ap.add_argument("--init", metavar="RUN_DIR",
                    help="initialize from RUN_DIR/model.pt (same arch and classes), e.g. a train_cached.py run")
    ap.add_argument("--trunk-blocks", type=int, default=11,
                    help="stem + blocks 0..N-1 form the 'trunk' that gets --trunk-lr-mult")
    ap.add_argument("--trunk-lr-mult", type=float, default=1.0,
                    help="learning-rate factor for the trunk (e.g. 0.3 when fine-tuning from --init)")
    ap.add_argument("--warmup", type=int, default=100, help="linear LR warm-up steps")
    ap.add_argument("--max-per-class", type=int, help="tiny subsets (smoke tests)")
    ap.add_argument("--eval-every", type=float, default=1.0, help="validate every N epochs")
    ap.add_argument("--val-max", type=int, help="validate on a fixed random subset of this size (probes)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", default=str(Path(__file__).resolve().parent / "cache"),
                    help="preprocessed-image cache folder ('' = none)")
    ap.add_argument("--out", required=True, help="run folder (checkpoint, meta.json, split.csv, log)")
    return ap.parse_args(argv)


# ---------------------------------------------------------------- augmentation (batched, torch)
def augment(x, gen):
    """x: float [N,3,H,W] in 0..1. Geometric (any rotation, flip, +-15% scale, small shift) and
    colour/stain jitter (optical-density per-channel scale = HED-like, brightness, contrast,
    saturation, hue) plus occasional blur."""
    import torch
    import torch.nn.functional as F
    n = x.shape[0]
    r = lambda *s: torch.rand(*s, generator=gen)  # noqa: E731
    ang = r(n) * 2 * math.pi
    s = torch.exp((r(n) * 2 - 1) * math.log(1.15))
    flip = torch.where(r(n) < 0.5, -1.0, 1.0)
    tx, ty = (r(n) * 2 - 1) * 0.06, (r(n) * 2 - 1) * 0.06
    c, si = torch.cos(ang) * s, torch.sin(ang) * s
    theta = torch.stack([torch.stack([c * flip, -si, tx], 1), torch.stack([si * flip, c, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    # stain: scale optical density per RGB channel
    od = -torch.log(x.clamp(1 / 255, 1))
    od = od * (1 + 0.12 * (r(n, 3, 1, 1) * 2 - 1)) + 0.03 * (r(n, 3, 1, 1) * 2 - 1)
    x = torch.exp(-od)
    # brightness / contrast
    x = x * (0.85 + 0.3 * r(n, 1, 1, 1))
    m = x.mean((1, 2, 3), keepdim=True)
    x = m + (x - m) * (0.8 + 0.4 * r(n, 1, 1, 1))
    # saturation
    g = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
    x = g + (x - g) * (0.7 + 0.6 * r(n, 1, 1, 1))
    # hue: rotate the chroma plane in YIQ
    a = (r(n) * 2 - 1) * 0.2
    yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    inv = torch.linalg.inv(yiq)
    rot = torch.zeros(n, 3, 3)
    rot[:, 0, 0] = 1
    rot[:, 1, 1] = torch.cos(a); rot[:, 1, 2] = -torch.sin(a)
    rot[:, 2, 1] = torch.sin(a); rot[:, 2, 2] = torch.cos(a)
    T = inv @ rot @ yiq
    x = torch.einsum("nij,njhw->nihw", T, x)
    # occasional blur (focus)
    b = r(n) < 0.2
    if b.any():
        x[b] = F.avg_pool2d(x[b], 3, 1, 1, count_include_pad=False)
    return x.clamp(0, 1)


def to_input(xu8):
    import torch
    x = torch.from_numpy(xu8).permute(0, 3, 1, 2).float() / 255.0
    return x.contiguous(memory_format=torch.channels_last)


def norm(x):
    import torch
    mean = torch.tensor(common.MEAN).view(1, 3, 1, 1)
    std = torch.tensor(common.STD).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous(memory_format=torch.channels_last)


def predict(model, imgs, batch=64):
    import torch
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(imgs), batch):
            out.append(model(norm(to_input(imgs[i:i + batch]))).numpy())
    return np.concatenate(out) if out else np.zeros((0, 1), np.float32)


def evaluate(logits, items, classes):
    y = np.array([classes.index(it["cls"]) for it in items])
    p = logits.argmax(1)
    res = {"all": common.per_class(y, p, classes)}
    for s in sorted({it["source"] for it in items}):
        m = np.array([it["source"] == s for it in items])
        res[s] = common.per_class(y[m], p[m], classes)
    srcs = [s for s in res if s != "all"]
    res["score"] = float(np.mean([res[s]["macro_f1"] for s in srcs]))
    return res


def main(argv=None):
    a = get_args(argv)
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed); np.random.seed(a.seed); random.seed(a.seed)
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    log = open(out / "train.log", "a")

    def say(*msg):
        s = " ".join(str(m) for m in msg)
        print(s, flush=True); log.write(s + "\n"); log.flush()

    sources = common.parse_sources(a.data, a.zoom)
    classes = a.classes.split(",") if a.classes else None
    items, classes = common.scan(sources, classes, a.max_per_class)
    say(f"sources: {[(n, str(p), z) for n, p, z in sources]}")
    say(f"classes ({len(classes)}): {classes}")
    by = {sp: [it for it in items if it["split"] == sp] for sp in ("train", "val", "test")}
    say("images:", {k: len(v) for k, v in by.items()})
    if a.val_max and len(by["val"]) > a.val_max:
        sel = np.random.default_rng(1).choice(len(by["val"]), a.val_max, replace=False)
        by["val"] = [by["val"][i] for i in sorted(sel)]
    with open(out / "split.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["split", "source", "class", "file"])
        for sp in ("val", "test"):
            for it in by[sp]:
                w.writerow([sp, it["source"], it["cls"], Path(it["path"]).name])
    t0 = time.time()
    cache = a.cache or None
    X = {sp: common.preload(by[sp], a.size, cache) for sp in ("train", "val")}
    say(f"preloaded in {time.time() - t0:.0f}s")
    ytr = np.array([classes.index(it["cls"]) for it in by["train"]])
    # class-balanced sampling; within a class, each source contributes equally
    wts = common.balanced_weights(by["train"], classes)

    model = common.build_model(a.arch, len(classes), pretrained=not a.no_pretrained)
    model = model.to(memory_format=torch.channels_last)
    nparam = sum(p.numel() for p in model.parameters())
    say(f"arch {a.arch} params {nparam}")
    teacher = None
    if a.teacher:
        tm = json.loads((Path(a.teacher) / "meta.json").read_text())
        assert tm["classes"] == classes, "teacher classes differ"
        teacher = common.build_model(tm["arch"], len(classes), pretrained=False)
        teacher.load_state_dict(torch.load(Path(a.teacher) / "model.pt", map_location="cpu"))
        teacher.eval()
        say(f"distilling from {a.teacher} ({tm['arch']}@{tm['size']})")
    if a.init:
        im = json.loads((Path(a.init) / "meta.json").read_text())
        assert im["arch"] == a.arch and im["classes"] == classes, "--init run has another arch or classes"
        model.load_state_dict(torch.load(Path(a.init) / "model.pt", map_location="cpu"))
        say(f"initialized from {a.init}/model.pt")
    trunk, upper = [], []
    for name, p in model.named_parameters():
        parts = name.split(".")
        blk = parts[1] if parts[0] in ("blocks", "_blocks") else None
        is_trunk = parts[0] in ("stem", "_conv_stem", "_bn0") or (blk is not None and int(blk) < a.trunk_blocks)
        (trunk if is_trunk else upper).append(p)
    groups = [{"params": upper, "mult": 1.0}]
    if trunk:
        groups.append({"params": trunk, "mult": a.trunk_lr_mult})
    say(f"param groups: upper {sum(p.numel() for p in upper)}, trunk {sum(p.numel() for p in trunk)} "
        f"(lr x{a.trunk_lr_mult})")
    opt = torch.optim.AdamW(groups, lr=a.lr, weight_decay=a.wd)
    epoch_size = a.epoch_size or len(by["train"])
    steps_per_epoch = max(1, epoch_size // a.batch)
    total_steps = None if a.minutes else max(1, int(a.epochs * steps_per_epoch))
    warm = min(a.warmup, steps_per_epoch)
    gen = torch.Generator().manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)
    eval_steps = max(1, int(a.eval_every * steps_per_epoch))
    best, hist = -1.0, []

    def write_meta(r, final=True):
        meta = {"arch": a.arch, "size": a.size, "classes": classes, "params": nparam,
                "sources": [[n, str(p), z] for n, p, z in sources], "steps": step, "batch": a.batch,
                "epochs": step / steps_per_epoch, "train_minutes": (time.time() - tstart) / 60, "lr": a.lr,
                "trunk_lr_mult": a.trunk_lr_mult, "trunk_blocks": a.trunk_blocks, "init": a.init,
                "teacher": a.teacher, "max_per_class": a.max_per_class, "seed": a.seed,
                "minutes_budget": a.minutes, "finished": final,
                "val_final": {k: v for k, v in r.items()}, "history": hist,
                "counts": {sp: len(v) for sp, v in by.items()}}
        (out / "meta.json").write_text(json.dumps(meta, indent=1))
    step, tstart = 0, time.time()
    while True:
        frac = (time.time() - tstart) / (a.minutes * 60) if a.minutes else step / total_steps
        if frac >= 1.0:
            break
        lr = a.lr * min(1.0, (step + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))
        for g in opt.param_groups:
            g["lr"] = lr * g["mult"]
        idx = rng.choice(len(wts), size=a.batch, p=wts)
        model.train()
        x = norm(augment(to_input(X["train"][idx]), gen))
        y = torch.from_numpy(ytr[idx])
        logits = model(x)
        loss = F.cross_entropy(logits, y, label_smoothing=a.smoothing)
        if teacher is not None:
            with torch.no_grad():
                tin = x if tm["size"] == a.size else F.interpolate(x, size=tm["size"], mode="bilinear",
                                                                   align_corners=False)
                tl = teacher(tin)
            kd = F.kl_div(F.log_softmax(logits / 2, 1), F.softmax(tl / 2, 1), reduction="batchmean") * 4
            loss = (1 - a.kd_alpha) * loss + a.kd_alpha * kd
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if step % 20 == 0:
            say(f"step {step} ep {step / steps_per_epoch:.2f} loss {loss.item():.3f} lr {lr:.2e} "
                f"{(time.time() - tstart) / step:.2f}s/step")
        done = (a.minutes and (time.time() - tstart) >= a.minutes * 60) or (total_steps and step >= total_steps)
        if step % eval_steps == 0 or done:
            r = evaluate(predict(model, X["val"]), by["val"], classes)
            hist.append({"step": step, "epoch": step / steps_per_epoch, "val": {k: (v["macro_f1"] if isinstance(v, dict) else v) for k, v in r.items()},
                         "minutes": (time.time() - tstart) / 60})
            say(f"VAL step {step}: " + " ".join(f"{k}={v['macro_f1']:.4f}/{v['accuracy']:.4f}"
                                                for k, v in r.items() if isinstance(v, dict)))
            # keep the last model (cosine schedule ends at lr 0); also remember the best
            torch.save(model.state_dict(), out / "model.pt")
            write_meta(r, final=False)  # checkpoint: an interrupted run can still be exported
            if r["score"] > best:
                best = r["score"]
                torch.save(model.state_dict(), out / "best.pt")
    r = evaluate(predict(model, X["val"]), by["val"], classes)
    torch.save(model.state_dict(), out / "model.pt")
    write_meta(r)
    say(f"done: {step} steps, {(time.time() - tstart) / 60:.1f} min, val score {r['score']:.4f}")


if __name__ == "__main__":
    main()
