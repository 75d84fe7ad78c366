#!/usr/bin/env python3
"""Summary of a sweep directory: SWEEP/summary.json, SWEEP/summary.tsv and a table on stdout.

  python models/train/sweep/summarize.py SWEEP NAME:RECIPE:SEED ...

Reads SWEEP/NAME/detector.json and rescore.json, SWEEP/NAME.rc (exit status) and NAME.wall (s);
a run that failed or never finished still gets a row (its numbers empty)."""
import json
import sys
from pathlib import Path

THRESHOLDS = ("0.10", "0.15", "0.20", "0.25", "0.30")


def read_json(path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_text(path, default=""):
    try:
        return path.read_text().strip()
    except OSError:
        return default


def prf(tp, fp, fn):
    p, r = tp / max(tp + fp, 1), tp / max(tp + fn, 1)
    return p, r, 2 * p * r / max(p + r, 1e-9)


def row_of(sweep, name, recipe, seed):
    det = read_json(sweep / name / "detector.json") or {}
    res = read_json(sweep / name / "rescore.json") or {}
    hb = det.get("heldback", {})
    row = {"name": name, "recipe": recipe, "seed": int(seed), "rc": read_text(sweep / f"{name}.rc", "none"),
           "wall_s": read_text(sweep / f"{name}.wall"), "train_s": round(det["seconds"], 1) if "seconds" in det else "",
           "threshold": round(det["threshold"], 3) if "threshold" in det else "",
           "tp": hb.get("tp", ""), "fp": hb.get("fp", ""), "fn": hb.get("fn", ""),
           "P": round(hb["precision"], 4) if hb else "", "R": round(hb["recall"], 4) if hb else "",
           "F1": round(hb["f1"], 4) if hb else "",
           "rescore_matches": res.get("picked", {}).get("same_as_detector_json", "")}
    for t in THRESHOLDS:
        s = res.get("fixed", {}).get(t, {})
        for k in ("tp", "fp", "fn"):
            row[f"{k}@{t}"] = s.get(k, "")
    return row


def recipe_lines(rows):
    """Per recipe, tp/fp/fn pooled over the finished seeds: P/R/F1 at the picked and fixed thresholds."""
    lines = []
    for recipe in dict.fromkeys(r["recipe"] for r in rows):
        done = [r for r in rows if r["recipe"] == recipe and r["tp"] != ""]
        if not done:
            lines.append(f"{recipe:6s} no finished run")
            continue
        parts = []
        for label, keys in [("picked", ("tp", "fp", "fn"))] + [(t, tuple(f"{k}@{t}" for k in ("tp", "fp", "fn")))
                                                               for t in THRESHOLDS]:
            vals = [r for r in done if r[keys[0]] != ""]
            if vals:
                p, rr, f = prf(*(sum(r[k] for r in vals) for k in keys))
                parts.append(f"{label} P{p:.3f} R{rr:.3f} F{f:.3f}")
        f1s = [r["F1"] for r in done]
        lines.append(f"{recipe:6s} n={len(done)} F1 mean {sum(f1s) / len(f1s):.4f} min {min(f1s):.4f} max {max(f1s):.4f} | "
                     + " | ".join(parts))
    return lines


def main():
    sweep = Path(sys.argv[1])
    rows = [row_of(sweep, *spec.split(":")) for spec in sys.argv[2:]]
    cols = list(rows[0].keys()) if rows else []
    (sweep / "summary.json").write_text(json.dumps({"runs": rows, "recipes": recipe_lines(rows)}, indent=1))
    table = ["\t".join(cols)] + ["\t".join(str(r[c]) for c in cols) for r in rows]
    (sweep / "summary.tsv").write_text("\n".join(table) + "\n")
    short = ["name", "rc", "wall_s", "train_s", "threshold", "tp", "fp", "fn", "P", "R", "F1", "rescore_matches"]
    print(" ".join(f"{c:>9s}" for c in short) + "  tp/fp/fn@" + ",".join(THRESHOLDS))
    for r in rows:
        fixed = " ".join(f"{r[f'tp@{t}']}/{r[f'fp@{t}']}/{r[f'fn@{t}']}" for t in THRESHOLDS)
        print(" ".join(f"{str(r[c]):>9s}" for c in short) + "  " + fixed)
    print("\n".join(recipe_lines(rows)))


if __name__ == "__main__":
    main()
