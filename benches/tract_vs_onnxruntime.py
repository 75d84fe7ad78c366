#!/usr/bin/env python3
"""tract versus onnxruntime on the same model, thread count and input, side by side in one run.

For each model manifest, onnxruntime (CPU provider, 1 intra-op and 1 inter-op thread, sequential)
times batches of 1, 8 and 32 real marrow crops resized to the model input, then `marrowscope bench
--json` times tract (single-threaded) on the same model and batch sizes; the two are printed with
their ratio. Both time the model only: crops already at the input size, warm-up first, then at
least 64 crops and 0.5 s.

    python3 benches/tract_vs_onnxruntime.py [--bin target/release/marrowscope] [--json OUT]
        [--models models/marrow-f32.ron models/marrow-int8.ron] [--batches 1,8,32]

Needs numpy, pillow and onnxruntime (models/train/requirements.txt) and ../shared/data/marrow.
"""
import argparse
import json
import platform
import re
import subprocess
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


def manifest_fields(path):
    """The fields of a model manifest (RON) that the timing needs."""
    text = Path(path).read_text()

    def field(name):
        m = re.search(rf"\b{name}\s*:\s*([^,\n]+(?:\([^)]*\))?)", text)
        if not m:
            sys.exit(f"{path}: no `{name}` field")
        return m.group(1).strip()

    def triple(name):
        return [float(v) for v in re.findall(r"[-\d.]+", field(name))[:3]]

    return {
        "file": Path(path).parent / field("file").strip('"'),
        "size": int(field("input_size")),
        "mean": triple("mean"),
        "std": triple("std"),
    }


def crops(data, size, mean, std, n=32):
    """n real marrow crops, resized and normalized as the runtime does (CHW, float32)."""
    files = sorted(Path(data, "marrow").rglob("*.jpg"))
    files = files[:: max(1, len(files) // n)][:n]
    if len(files) < n:
        sys.exit(f"need {n} crops under {data}/marrow")
    out = []
    for f in files:
        img = Image.open(f).convert("RGB").resize((size, size), Image.BILINEAR)
        a = np.asarray(img, np.float32) / 255.0
        out.append(((a - mean) / std).transpose(2, 0, 1))
    return np.stack(out).astype(np.float32)


def time_ort(model_file, x, batch):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sess = ort.InferenceSession(str(model_file), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    chunk = np.concatenate([x] * (batch // len(x) + 1))[:batch]
    sess.run(None, {name: chunk})
    # Same statistic as `marrowscope bench`: the median batch time over at least 64 crops and 1 s.
    done, start, per_batch = 0, time.perf_counter(), []
    while done < 64 or time.perf_counter() - start < 1.0:
        t = time.perf_counter()
        sess.run(None, {name: chunk})
        per_batch.append((time.perf_counter() - t) * 1000)
        done += batch
    return statistics.median(per_batch) / batch


def time_tract(binary, manifest, batches):
    out = subprocess.run(
        [binary, "bench", "--json", "--model", str(manifest), "--frames", "10",
         "--batches", ",".join(map(str, batches))],
        check=True, capture_output=True, text=True, cwd=ROOT).stdout
    report = json.loads(out.strip().splitlines()[-1])
    return {c["batch"]: c["ms_per_crop"] for c in report["classify"]}, report["machine"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", default=str(ROOT / "target/release/marrowscope"))
    ap.add_argument("--models", nargs="+", default=["models/marrow-f32.ron", "models/marrow-int8.ron"])
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data"))
    ap.add_argument("--json", help="also write the rows here")
    a = ap.parse_args()
    batches = [int(b) for b in a.batches.split(",")]
    import onnxruntime as ort

    rows, machine = [], platform.processor()
    for m in a.models:
        f = manifest_fields(ROOT / m)
        x = crops(a.data, f["size"], np.array(f["mean"], np.float32), np.array(f["std"], np.float32))
        ort_ms = {b: time_ort(f["file"], x, b) for b in batches}
        tract_ms, machine = time_tract(a.bin, ROOT / m, batches)
        for b in batches:
            rows.append({"model": Path(m).stem, "batch": b, "tract_ms_per_crop": tract_ms[b],
                         "onnxruntime_ms_per_crop": ort_ms[b], "ratio": tract_ms[b] / ort_ms[b]})
    print(f"tract vs onnxruntime {ort.__version__}, 1 thread each, on {machine}, "
          f"{time.strftime('%Y-%m-%d')}")
    print(f"{'model':<14}{'batch':>6}{'tract ms/crop':>15}{'ort ms/crop':>13}{'tract/ort':>11}")
    for r in rows:
        print(f"{r['model']:<14}{r['batch']:>6}{r['tract_ms_per_crop']:>15.2f}"
              f"{r['onnxruntime_ms_per_crop']:>13.2f}{r['ratio']:>11.2f}")
    if a.json:
        Path(a.json).write_text(json.dumps({"machine": machine, "onnxruntime": ort.__version__,
                                            "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
