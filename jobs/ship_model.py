"""Make a trained model the shipped one: calibrate its confidence on the val split and write it, named and
with its training notes, to ``raypipe/weights/raypipe-small.safetensors``.

    python jobs/ship_model.py --model out/train/shipped-palette-cpu/model.safetensors --data out/sim/catalog-r4 \
        --data-note "catalog-r4: ..." --hardware "2 CPU cores (1 thread), no GPU"
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="the trained model file")
    parser.add_argument("--data", required=True, help="the simulated dataset whose val split calibrates it")
    parser.add_argument("--limit", type=int, default=800, help="val rows to calibrate on")
    parser.add_argument("--views", type=int, default=4,
                        help="test-time augmentation written into the model: how many flips of each stack it "
                             "combines (1-4; the calibration is fitted with them; each view costs one pass)")
    parser.add_argument("--name", default="raypipe-small")
    parser.add_argument("--data-note", default="", help="what it was trained on (for the model's notes)")
    parser.add_argument("--hardware", default="", help="where it was trained")
    parser.add_argument("--out", default=str(ROOT / "raypipe" / "weights" / "raypipe-small.safetensors"))
    args = parser.parse_args()
    from raypipe.model.calibration import fit
    from raypipe.training.evaluation import _readings, _rows
    from raypipe.model.files import rewrite_model
    from raypipe.model.inference import load_model

    model = load_model(args.model, device="cpu", views=args.views)
    rows = _rows(args.data, "val", args.limit, None)
    _, readings, right = _readings(model, rows)
    calibration = fit([r.features for r in readings], right, fitted_on=f"{args.data} split val, {len(rows)} stacks, "
                                                           f"{args.views} views")
    notes = {"data": args.data_note or args.data, "hardware": args.hardware, "steps": model.notes.get("step"),
             "trained_as": model.name}
    rewrite_model(args.model, args.out, name=args.name, notes=notes, calibration=calibration,
                  views=args.views)
    shipped = load_model(args.out, device="cpu")
    print(json.dumps({"out": args.out, "tag": shipped.tag, "notes": shipped.notes, "calibrated_on": len(rows), "views": shipped.views,
                      "formula_right_on_val": sum(right) / len(right)}, indent=2, default=str))


if __name__ == "__main__":
    main()
