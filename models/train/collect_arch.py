#!/usr/bin/env python3
"""Architecture table: export each run (f32 + int8), measure latency (batch 1, 1 thread) in onnxruntime
and tract, and collect the validation macro-F1 recorded at the end of training.

  collect_arch.py --run "EfficientNet-Lite0 128=runs/effl0" --run "Lite0-trunc13 128 (KD)=runs/effl0t" \
      --out models/train/arch_table.json
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import export  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", action="append", required=True, metavar="NAME=DIR")
    ap.add_argument("--latency-runs", type=int, default=100)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    rows = []
    for spec in a.run:
        name, d = spec.split("=", 1)
        d = Path(d)
        if not (d / "export" / "latency.json").exists():
            export.main(["--run", str(d), "--latency-only", "--latency-runs", str(a.latency_runs)])
        lat = json.loads((d / "export" / "latency.json").read_text())
        meta = json.loads((d / "meta.json").read_text())
        v = meta["val_final"]
        rows.append({"name": name, "params": meta["params"],
                     "trained": f"{meta['train_minutes']:.0f} min, {meta['epochs']:.1f} ep"
                                + (f", KD" if meta.get("teacher") else ""),
                     "val_marrow": v["marrow"]["macro_f1"], "val_pbc": v["pbc"]["macro_f1"],
                     "int8_mb": lat["int8_bytes"] / 1e6, "f32_mb": lat["f32_bytes"] / 1e6,
                     "ort_f32": lat["latency"]["f32"]["ort_ms"], "ort_int8": lat["latency"]["int8"]["ort_ms"],
                     "tract_f32": lat["latency"]["f32"].get("tract_ms", float("nan")),
                     "tract_int8": lat["latency"]["int8"].get("tract_ms", float("nan"))})
        print(rows[-1], flush=True)
    Path(a.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
