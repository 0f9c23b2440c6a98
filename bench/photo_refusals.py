"""Natural photographs on the three bundled models: refused before and after the colour check (issue 24 item 1).

The 15 scikit-image sample images (``ood_scores.photos_named``; the bar: "every model on natural photographs:
all refused") through each bundled model's Predictor (feature gate, modality router): refused counts without
the colour check (the verdicts with no chroma: the behaviour before it) and with it (``Predictor.predict``),
then each photograph still accepted, with its chroma, gate score against the refuse threshold and, for the
modality model, its top class. Usage::

    PYTHONPATH=. .venv/bin/python bench/photo_refusals.py
"""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from ood_scores import photos_named  # noqa: E402

from medclf_core.inference.predictor import Predictor  # noqa: E402
from medclf_core.trust.colour import mean_chroma  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    names, photos = zip(*photos_named(), strict=True)
    for m in ("brain-mri-tumour", "chest-xray-pneumonia", "imaging-modality"):
        p = Predictor.from_run(REPO / "models" / m)
        prepared = np.stack([p.prepare(a) for a in photos])
        probs, feats = p.predict_batch_with_features(prepared)
        before = p.verdicts(feats, None, len(photos), prepared)
        after = p.predict(photos)
        n_before, n_after = sum(bool(v["ood"]) for v in before), sum(bool(r["ood"]) for r in after)
        by_colour = sum("colour image" in (r["ood_reason"] or "") for r in after)
        print(f"{m:22s} n={len(photos)} refused before {n_before}/{len(photos)}, after {n_after}/{len(photos)} "
              f"(colour check fires on {by_colour})", flush=True)
        print("    accepted before:", ", ".join(n for n, v in zip(names, before, strict=True) if not v["ood"]) or "none")
        for name, a, r, row in zip(names, photos, after, probs, strict=True):
            if not r["ood"]:
                top = p.class_names[int(np.argmax(row))]
                thr = p.gate.threshold if p.gate is not None else None
                print(f"    accepted: {name:22s} chroma {mean_chroma(a):5.1f} mean {a.mean():5.1f} gate score "
                      f"{r['ood_score']:.1f} (refuse >= {thr:.1f}) top {top} {row.max():.3f} "
                      f"unfamiliar {r['unfamiliar']}")


if __name__ == "__main__":
    main()
