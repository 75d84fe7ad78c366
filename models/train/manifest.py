#!/usr/bin/env python3
"""Write (or check) the RON manifest that travels with a model file. The sha256 is always computed from
the .onnx file, so the manifest never drifts from the weights.

  manifest.py --check models/marrow-int8.ron          # verify hash + file present
  manifest.py --rehash models/marrow-int8.ron         # recompute the sha256 in place
"""
import argparse
import hashlib
import re
import sys
from pathlib import Path

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _f(x):
    s = repr(float(x))
    return s


def render(*, name, file, sha, input_size, crop_um, classes, temperature, abstain_below, precision,
           metrics, mean=MEAN, std=STD):
    cls = ", ".join(f'"{c}"' for c in classes)
    met = ", ".join(f'"{k}": {_f(round(v, 4))}' for k, v in metrics.items())
    return (
        "(\n"
        f'    name: "{name}",\n'
        f'    file: "{file}",\n'
        f'    sha256: "{sha}",\n'
        f"    input_size: {int(input_size)},\n"
        f"    mean: ({', '.join(_f(m) for m in mean)}),\n"
        f"    std: ({', '.join(_f(s) for s in std)}),\n"
        f"    crop_um: {_f(crop_um)},\n"
        f"    classes: [{cls}],\n"
        f"    temperature: {_f(temperature)},\n"
        f"    abstain_below: {_f(abstain_below)},\n"
        f'    precision: "{precision}",\n'
        f"    metrics: {{{met}}},\n"
        ")\n"
    )


def write(ron_path, onnx_path, **kw):
    ron_path, onnx_path = Path(ron_path), Path(onnx_path)
    rel = Path(onnx_path).resolve().relative_to(ron_path.resolve().parent)
    text = render(file=str(rel), sha=sha256(onnx_path), **kw)
    ron_path.write_text(text)
    return text


def check(ron_path):
    ron_path = Path(ron_path)
    t = ron_path.read_text()
    f = re.search(r'file:\s*"([^"]+)"', t).group(1)
    s = re.search(r'sha256:\s*"([0-9a-f]{64})"', t).group(1)
    actual = sha256(ron_path.parent / f)
    return actual == s, actual


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", nargs="*", default=[])
    ap.add_argument("--rehash", nargs="*", default=[])
    a = ap.parse_args()
    bad = 0
    for p in a.check:
        ok, h = check(p)
        print(f"{p}: {'ok' if ok else 'MISMATCH (file sha256 ' + h + ')'}")
        bad += not ok
    for p in a.rehash:
        t = Path(p).read_text()
        f = re.search(r'file:\s*"([^"]+)"', t).group(1)
        h = sha256(Path(p).parent / f)
        Path(p).write_text(re.sub(r'sha256:\s*"[0-9a-f]*"', f'sha256: "{h}"', t))
        print(f"{p}: sha256 {h}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
