#!/usr/bin/env python3
"""Print the measured tables for MODEL_CARD.md from models/train/metrics.json (written by export.py
--ship) and models/train/arch_table.json (collect_arch.py), so that no number is typed by hand.

  models/train/.venv/bin/python models/train/card_tables.py > /tmp/tables.md
"""
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Matek et al., Blood 2021, Table 1 (precision / recall, strict), for the classes this model has.
MATEK = {"BLA": (0.75, 0.65), "EOS": (0.85, 0.91), "LYT": (0.90, 0.70), "MON": (0.57, 0.70),
         "NGS": (0.92, 0.71), "PMO": (0.76, 0.72), "EBO": (0.88, 0.82), "NGB": (0.54, 0.65),
         "MMZ": (0.30, 0.64), "MYB": (0.52, 0.59), "BAS": (0.14, 0.64), "ART": (0.82, 0.74),
         "NIF": (0.27, 0.63)}


def f(x, d=3):
    return f"{x:.{d}f}"


def main():
    m = json.loads((HERE / "metrics.json").read_text())
    out = []
    for prec in ("int8", "f32"):
        t = m[prec]["test"]
        out.append(f"\n### Test split, {prec} (onnxruntime)\n")
        out.append("| source | n | accuracy | macro-F1 |\n|---|---|---|---|")
        for s in ("marrow", "pbc", "all"):
            if s in t:
                out.append(f"| {s} | {t[s]['n']} | {f(t[s]['accuracy'])} | {f(t[s]['macro_f1'])} |")
    t = m["int8"]["test"]
    out.append("\n### Per class, int8, test split (P / R / F1, support) vs Matek 2021 strict P / R\n")
    out.append("| class | marrow P | marrow R | marrow F1 | n | pbc P | pbc R | pbc F1 | n | Matek 2021 P | Matek 2021 R |")
    out.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for c in m["classes"]:
        row = [c]
        for s in ("marrow", "pbc"):
            d = t.get(s, {}).get("classes", {}).get(c)
            row += [f(d["precision"], 2), f(d["recall"], 2), f(d["f1"], 2), str(d["support"])] if d else ["–"] * 4
        mp = MATEK.get(c)
        row += [f(mp[0], 2), f(mp[1], 2)] if mp else ["–", "–"]
        out.append("| " + " | ".join(row) + " |")
    out.append("\n### int8 vs f32 (test split)\n")
    out.append("| | f32 | int8 |\n|---|---|---|")
    for key, lab in (("marrow", "marrow macro-F1"), ("pbc", "pbc macro-F1"), ("all", "accuracy (all)")):
        k2 = "accuracy" if key == "all" else "macro_f1"
        out.append(f"| {lab} | {f(m['f32']['test'][key][k2])} | {f(m['int8']['test'][key][k2])} |")
    out.append(f"| file size | {m['f32_bytes'] / 1e6:.2f} MB | {m['int8_bytes'] / 1e6:.2f} MB |")
    out.append("\n### Calibration (temperature and abstain threshold chosen on validation; reported on test)\n")
    out.append("| | f32 | int8 |\n|---|---|---|")
    out.append(f"| temperature | {m['f32']['temperature']} | {m['int8']['temperature']} |")
    for k, lab in (("ece_raw", "ECE before (T=1)"), ("ece", "ECE after"), ("abstain_rate", "abstain rate"),
                   ("accepted_accuracy", "accuracy of accepted cells")):
        out.append(f"| {lab} (test) | {f(m['f32']['test'][k])} | {f(m['int8']['test'][k])} |")
    out.append(f"| abstain_below | {m['f32']['abstain_below']} | {m['int8']['abstain_below']} |")
    out.append(f"| val ECE before / after | {f(m['f32']['val']['ece_raw'])} / {f(m['f32']['val']['ece'])} | "
               f"{f(m['int8']['val']['ece_raw'])} / {f(m['int8']['val']['ece'])} |")
    out.append(f"\n'Which lab' shortcut (marrow test crops predicted as a pbc-only class BAS/EBO/MMZ/MYB/NGB): "
               f"f32 {f(m['f32']['test']['shortcut_rate_marrow_to_pbc_only'] * 100, 1)} %, "
               f"int8 {f(m['int8']['test']['shortcut_rate_marrow_to_pbc_only'] * 100, 1)} %")
    if "tract" in m:
        out.append("\n### tract (python 0.23.9) vs onnxruntime\n")
        for k, v in m["tract"].items():
            out.append(f"- {k}: {v}")
    at = HERE / "arch_table.json"
    if at.exists():
        out.append("\n### Architectures tried (validation macro-F1; latency per crop, batch 1, 1 thread)\n")
        out.append("| model | params | trained | val marrow F1 | val pbc F1 | int8 size | ort f32 | ort int8 | tract f32 | tract int8 |")
        out.append("|---|---|---|---|---|---|---|---|---|---|")
        for r in json.loads(at.read_text()):
            out.append(f"| {r['name']} | {r['params'] / 1e6:.2f} M | {r['trained']} | {f(r['val_marrow'])} | "
                       f"{f(r['val_pbc'])} | {r['int8_mb']:.2f} MB | {r['ort_f32']:.2f} ms | {r['ort_int8']:.2f} ms | "
                       f"{r['tract_f32']:.2f} ms | {r['tract_int8']:.2f} ms |")
    print("\n".join(out))


if __name__ == "__main__":
    main()
