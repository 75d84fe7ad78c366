#!/usr/bin/env python3
"""Held-back tp/fp/fn of a finished detector.py run at fixed heat-map thresholds.

  python models/train/sweep/rescore.py <the same arguments as the detector.py run>   # reads OUT/detector.pt

Picks the held-back frames and predicts them as detector.py does (load_frames, hold_back,
full-resolution read_rgb, predict on --device), scores them with detector.score at 0.10 ... 0.30 and
at the threshold in OUT/detector.json (checked against the tp/fp/fn stored there), and writes
OUT/rescore.json.
"""
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import detector as D  # noqa: E402

THRESHOLDS = (0.10, 0.15, 0.20, 0.25, 0.30)


def held_outputs(args):
    """(outputs, held-back frames) of the run's checkpoint, as detector.py computes them."""
    frames = D.load_frames(Path(args.frames), "train", args.limit)
    _, held, _ = D.hold_back(frames, args)
    held_px = [(D.read_rgb(p), b) for p, b in held]
    model = D.detector_of(args)
    model.load_state_dict(torch.load(Path(args.out) / "detector.pt", map_location="cpu"))
    model.to(torch.device(args.device))
    return D.predict(model, held_px, args.size, args.pad), held_px


def main(argv=None):
    args = D.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    outputs, held_px = held_outputs(args)
    result = {"held_frames": len(held_px),
              "fixed": {f"{t:.2f}": D.score(outputs, held_px, t, args.pad / args.size) for t in THRESHOLDS}}
    if (out / "detector.json").exists():
        run = json.loads((out / "detector.json").read_text())
        again = D.score(outputs, held_px, run["threshold"], args.pad / args.size)
        result["picked"] = {"threshold": run["threshold"], "rescored": again,
                            "same_as_detector_json": all(again[k] == run["heldback"][k] for k in ("tp", "fp", "fn"))}
    (out / "rescore.json").write_text(json.dumps(result, indent=1))
    print("rescore: " + "  ".join(f"{t}: tp {s['tp']} fp {s['fp']} fn {s['fn']}" for t, s in result["fixed"].items())
          + (f"  picked matches detector.json: {result['picked']['same_as_detector_json']}" if "picked" in result else ""),
          flush=True)


if __name__ == "__main__":
    main()
