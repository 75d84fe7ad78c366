#!/usr/bin/env python3
"""Export a trained run to ONNX (f32 + static int8 QDQ), check it in onnxruntime and tract, calibrate
(temperature, abstain threshold) on the validation split, evaluate on the test split, measure latency,
and (with --ship) write the model files + RON manifests.

  models/train/.venv/bin/python models/train/export.py --run models/train/runs/main --ship models/

Outputs in <run>/export/: model-f32.onnx, model-int8.onnx, metrics.json, confusion.png.
With --ship DIR: DIR/marrow-f32.onnx, DIR/marrow-int8.onnx, DIR/marrow-{f32,int8}.ron, DIR/confusion.png,
DIR/train/metrics.json (the numbers quoted in MODEL_CARD.md), DIR/train/split.csv.
"""
import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import manifest  # noqa: E402


def get_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True)
    ap.add_argument("--ckpt", default="model.pt", help="model.pt (last) or best.pt")
    ap.add_argument("--calib", type=int, default=300, help="training images for int8 calibration")
    ap.add_argument("--latency-runs", type=int, default=100)
    ap.add_argument("--latency-only", action="store_true", help="export + latency only (architecture table)")
    ap.add_argument("--fixed-batch", type=int, help="export with this fixed batch instead of a dynamic one")
    ap.add_argument("--crop-um", type=float, default=19.2)
    ap.add_argument("--name", default="marrowscope-{arch}-{size}-{prec}")
    ap.add_argument("--target-acc", type=float, default=0.95,
                    help="abstain threshold: smallest max-prob cut with accepted accuracy >= this on val")
    ap.add_argument("--ship", help="folder to write marrow-{f32,int8}.onnx + .ron manifests (e.g. models/)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-tract", action="store_true")
    return ap.parse_args(argv)


def export_onnx(model, size, path, fixed_batch=None):
    import onnx
    import torch
    model.eval()
    x = torch.randn(fixed_batch or 1, 3, size, size)
    kw = dict(input_names=["input"], output_names=["logits"], opset_version=13, do_constant_folding=True)
    if not fixed_batch:
        kw["dynamic_axes"] = {"input": {0: "N"}, "logits": {0: "N"}}
    try:
        torch.onnx.export(model, x, str(path), dynamo=False, **kw)
    except TypeError:
        torch.onnx.export(model, x, str(path), **kw)
    m = onnx.load(str(path))
    # tract: intermediate shapes with the symbolic batch confuse its unification; drop them
    del m.graph.value_info[:]
    onnx.checker.check_model(m)
    onnx.save(m, str(path))


class Reader:
    def __init__(self, x):
        self.x = x; self.i = 0

    def get_next(self):
        if self.i >= len(self.x):
            return None
        r = {"input": self.x[self.i:self.i + 1]}
        self.i += 1
        return r

    def rewind(self):
        self.i = 0


def quantize(f32, int8, calib_x):
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static, CalibrationMethod
    quantize_static(str(f32), str(int8), Reader(calib_x), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax)
    import onnx
    m = onnx.load(str(int8))
    del m.graph.value_info[:]
    onnx.save(m, str(int8))


def ort_session(path, threads):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def ort_logits(sess, x, batch=64):
    out = []
    for i in range(0, len(x), batch):
        out.append(sess.run(["logits"], {"input": x[i:i + batch]})[0])
    return np.concatenate(out)


def tract_model(path, batch, size):
    import tract
    m = tract.onnx().load(str(path))
    m.set_input_fact(0, f"{batch},3,{size},{size},f32")
    m.set_output_fact(0, None)
    # tract 0.23 python: InferenceModel -> typed Model -> Runnable (into_runnable optimizes)
    return m.into_model().into_runnable()


def tract_logits(path, x, size, batch=8):
    r = tract_model(path, batch, size)
    out = []
    for i in range(0, len(x), batch):
        xb = x[i:i + batch]
        n = len(xb)
        if n < batch:
            xb = np.concatenate([xb, np.zeros((batch - n,) + xb.shape[1:], np.float32)])
        out.append(r.run([xb])[0].to_numpy()[:n])
    return np.concatenate(out)


def latency(path, size, runs, use_tract):
    x = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
    s = ort_session(path, 1)
    for _ in range(10):
        s.run(["logits"], {"input": x})
    t = time.perf_counter()
    for _ in range(runs):
        s.run(["logits"], {"input": x})
    res = {"ort_ms": (time.perf_counter() - t) / runs * 1000}
    if use_tract:
        r = tract_model(path, 1, size)
        for _ in range(5):
            r.run([x])
        t = time.perf_counter()
        for _ in range(runs):
            r.run([x])
        res["tract_ms"] = (time.perf_counter() - t) / runs * 1000
    return res


def fit_temperature(logits, y):
    best = (1e9, 1.0)
    for T in np.arange(0.5, 5.001, 0.01):
        p = common.softmax(logits / T)
        nll = -np.mean(np.log(p[np.arange(len(y)), y] + 1e-12))
        if nll < best[0]:
            best = (nll, float(T))
    return round(best[1], 2)


def pick_threshold(probs, y, target):
    conf = probs.max(1); ok = probs.argmax(1) == y
    for t in np.arange(0.0, 1.0, 0.01):
        m = conf >= t
        if m.sum() and ok[m].mean() >= target:
            return round(float(t), 2)
    return 0.99


def report(logits, items, classes, T, thr):
    y = np.array([classes.index(it["cls"]) for it in items])
    src = np.array([it["source"] for it in items])
    p = logits.argmax(1)
    out = {"all": common.per_class(y, p, classes)}
    for s in sorted(set(src)):
        m = src == s
        out[s] = common.per_class(y[m], p[m], classes)
    pr0 = common.softmax(logits); pr = common.softmax(logits / T)
    out["ece_raw"] = common.ece(pr0, y); out["ece"] = common.ece(pr, y)
    acc_m = pr.max(1) >= thr
    out["abstain_rate"] = float(1 - acc_m.mean())
    out["accepted_accuracy"] = float((p[acc_m] == y[acc_m]).mean()) if acc_m.any() else 0.0
    if "marrow" in out:
        m = src == "marrow"
        pbc_only = [classes.index(c) for c in common.PBC_ONLY if c in classes]
        out["shortcut_rate_marrow_to_pbc_only"] = float(np.isin(p[m], pbc_only).mean())
    return out


def confusion_png(logits, items, classes, path, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    y = np.array([classes.index(it["cls"]) for it in items])
    cm = common.confusion(y, logits.argmax(1), len(classes)).astype(float)
    rown = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(5.2, 4.6), dpi=80)
    ax.imshow(rown, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes))); ax.set_xticklabels(classes, rotation=90, fontsize=7)
    ax.set_yticks(range(len(classes))); ax.set_yticklabels(classes, fontsize=7)
    for i in range(len(classes)):
        for j in range(len(classes)):
            if cm[i, j]:
                ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=5,
                        color="white" if rown[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted"); ax.set_ylabel("true"); ax.set_title(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv=None):
    a = get_args(argv)
    import onnxruntime
    onnxruntime.set_default_logger_severity(3)
    import torch
    torch.set_num_threads(a.threads)
    run = Path(a.run)
    meta = json.loads((run / "meta.json").read_text())
    classes, size, arch = meta["classes"], meta["size"], meta["arch"]
    ex = run / "export"; ex.mkdir(exist_ok=True)
    model = common.build_model(arch, len(classes), pretrained=False)
    model.load_state_dict(torch.load(run / a.ckpt, map_location="cpu"))
    model.eval()
    f32, i8 = ex / "model-f32.onnx", ex / "model-int8.onnx"
    export_onnx(model, size, f32, a.fixed_batch)
    print(f"exported {f32} ({f32.stat().st_size / 1e6:.2f} MB)", flush=True)

    sources = [(n, Path(p), z) for n, p, z in meta["sources"]]
    items, _ = common.scan(sources, classes, meta.get("max_per_class"))
    by = {sp: [it for it in items if it["split"] == sp] for sp in ("train", "val", "test")}
    # calibration images: class-balanced from TRAIN (never val/test)
    rng = np.random.default_rng(0)
    per = max(1, a.calib // len(classes))
    cal = []
    for c in classes:
        idx = [i for i, it in enumerate(by["train"]) if it["cls"] == c]
        cal += list(rng.choice(idx, min(per, len(idx)), replace=False))
    cal_x = common.normalize_np(common.preload([by["train"][i] for i in cal], size, None))
    quantize(f32, i8, cal_x)
    print(f"quantized {i8} ({i8.stat().st_size / 1e6:.2f} MB) with {len(cal_x)} training images", flush=True)

    res = {"arch": arch, "size": size, "params": meta["params"], "classes": classes,
           "f32_bytes": f32.stat().st_size, "int8_bytes": i8.stat().st_size,
           "train": {k: meta[k] for k in ("epochs", "train_minutes", "steps", "batch", "counts") if k in meta},
           "calibration_images": len(cal_x)}
    res["latency"] = {"f32": latency(f32, size, a.latency_runs, not a.no_tract),
                      "int8": latency(i8, size, a.latency_runs, not a.no_tract),
                      "note": "batch 1, 1 thread, mean of %d runs after warm-up" % a.latency_runs}
    print("latency", res["latency"], flush=True)
    if a.latency_only:
        (ex / "latency.json").write_text(json.dumps(res, indent=1))
        return

    xv = common.normalize_np(common.preload(by["val"], size, None))
    xt = common.normalize_np(common.preload(by["test"], size, None))
    yv = np.array([classes.index(it["cls"]) for it in by["val"]])
    so32, so8 = ort_session(f32, a.threads), ort_session(i8, a.threads)
    L = {"f32": (ort_logits(so32, xv), ort_logits(so32, xt)), "int8": (ort_logits(so8, xv), ort_logits(so8, xt))}
    with torch.no_grad():
        tl = torch.cat([model(torch.from_numpy(xv[i:i + 64])) for i in range(0, len(xv), 64)]).numpy()
    res["torch_vs_ort_f32_max_abs_diff"] = float(np.abs(tl - L["f32"][0]).max())
    for prec in ("f32", "int8"):
        lv, lt = L[prec]
        T = fit_temperature(lv, yv)
        thr = pick_threshold(common.softmax(lv / T), yv, a.target_acc)
        res[prec] = {"temperature": T, "abstain_below": thr,
                     "val": report(lv, by["val"], classes, T, thr),
                     "test": report(lt, by["test"], classes, T, thr)}
        t = res[prec]["test"]
        print(f"{prec}: T={T} thr={thr} test acc {t['all']['accuracy']:.4f} " +
              " ".join(f"{s} F1 {t[s]['macro_f1']:.4f}" for s in t if isinstance(t[s], dict) and s != "all") +
              f" ece {t['ece_raw']:.4f}->{t['ece']:.4f} abstain {t['abstain_rate']:.3f}", flush=True)
    np.savez_compressed(ex / "logits.npz", val_f32=L["f32"][0], test_f32=L["f32"][1],
                        val_int8=L["int8"][0], test_int8=L["int8"][1])
    if not a.no_tract:
        parity = {}
        for prec, path in (("f32", f32), ("int8", i8)):
            for b in (1, 8):
                try:
                    tract_model(path, b, size)
                    parity[f"{prec}_loads_batch{b}"] = True
                except Exception as e:  # noqa: BLE001
                    parity[f"{prec}_loads_batch{b}"] = False
                    parity[f"{prec}_error_batch{b}"] = str(e)[:300]
        tv = tract_logits(i8, xv, size, 8)
        parity["int8_top1_agree_tract_vs_ort_val"] = float((tv.argmax(1) == L["int8"][0].argmax(1)).mean())
        parity["int8_max_abs_logit_diff"] = float(np.abs(tv - L["int8"][0]).max())
        tv32 = tract_logits(f32, xv[:256], size, 8)
        parity["f32_top1_agree_tract_vs_ort_val256"] = float((tv32.argmax(1) == L["f32"][0][:256].argmax(1)).mean())
        parity["n_val"] = len(xv)
        res["tract"] = parity
        print("tract", parity, flush=True)
    confusion_png(L["int8"][1], by["test"], classes, ex / "confusion.png",
                  f"int8 test split (marrow + pbc), n={len(by['test'])}")
    (ex / "metrics.json").write_text(json.dumps(res, indent=1))
    if a.ship:
        ship = Path(a.ship); ship.mkdir(parents=True, exist_ok=True)
        for prec, path in (("f32", f32), ("int8", i8)):
            dst = ship / f"marrow-{prec}.onnx"
            shutil.copyfile(path, dst)
            t = res[prec]["test"]
            metrics = {"marrow_macro_f1": t.get("marrow", t["all"])["macro_f1"],
                       "pbc_macro_f1": t.get("pbc", t["all"])["macro_f1"],
                       "test_accuracy": t["all"]["accuracy"], "ece": t["ece"],
                       "abstain_rate": t["abstain_rate"]}
            if "shortcut_rate_marrow_to_pbc_only" in t:
                metrics["shortcut_rate"] = t["shortcut_rate_marrow_to_pbc_only"]
            manifest.write(ship / f"marrow-{prec}.ron", dst,
                           name=a.name.format(arch={"effl0t": "effl0t13"}.get(arch, arch), size=size, prec=prec),
                           input_size=size, crop_um=a.crop_um, classes=classes,
                           temperature=res[prec]["temperature"], abstain_below=res[prec]["abstain_below"],
                           precision=prec, metrics=metrics)
        shutil.copyfile(ex / "confusion.png", ship / "confusion.png")
        (ship / "train").mkdir(exist_ok=True)
        (ship / "train" / "metrics.json").write_text(json.dumps(res, indent=1))
        shutil.copyfile(run / "split.csv", ship / "train" / "split.csv")
        print(f"shipped to {ship}")


if __name__ == "__main__":
    main()
