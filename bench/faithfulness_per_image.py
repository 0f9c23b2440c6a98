"""Heat-map faithfulness per image on the retrained brain model (issue 24 item 5, round four): does a rule score
Grad-CAM maps that lie on the tumour higher than maps that lie beside it?

The 12 ``--brain-set held-out`` images of bench/faithfulness_scale.py. Each Grad-CAM map was looked at on
its image (rendered locally, never committed) and labelled by hand in ON_TUMOUR: True where the hot region
lies on or overlaps the tumour, False where it is a broad blob on the middle of the brain or beside the lesion.
That is one reader's judgement without lesion masks, so the groups (7 and 5) are small and soft. For each rule
the script prints every image's score for its Grad-CAM map and for the centre blob, plus the mean of each
group. Docs: docs/BENCHMARKS.md, "Heat-map faithfulness on the retrained brain model ... (issue 24, round four)".

Usage::

    PYTHONPATH=. .venv/bin/python bench/faithfulness_per_image.py shipped copy shift-copy
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

ON_TUMOUR = {"train_m (113).jpg": False, "train_m (117).jpg": False, "train_m (136).jpg": True,
             "train_m (184).jpg": True, "test_image(10).jpg": False, "test_image(32).jpg": False,
             "test_image(35).jpg": True, "test_image(36).jpg": True, "test_image(13).jpg": True,
             "test_image(5).jpg": False, "test_image(56).jpg": True, "test_image(63).jpg": True}


def main(rules: list[str]) -> None:
    import faithfulness_scale as fs

    from medclf_core.explain.faithfulness import _deletion_inputs, _deletion_summary, class_scores
    from medclf_core.inference.predictor import Predictor
    from medclf_core.io.images import load_image

    predictor = Predictor.from_run(fs.REPO / "models" / "brain-mri-tumour")
    files = fs.brain_heldout_images(12)
    x = np.stack([predictor.prepare(load_image(f).pixels) for f in files])
    maps = {"gradcam": [h.heatmap for h in predictor.explain(list(x), "gradcam", 1, prepared=x)],
            "centre blob": fs.controls([np.zeros((7, 7), np.float32)] * len(x), smooth=True)["centre blob"]}
    on = np.array([ON_TUMOUR[f.name] for f in files])
    for rule in rules:
        for kind, mm in maps.items():
            scores = []
            for img, m in zip(x, mm, strict=True):
                v = _deletion_inputs(img, m, 10, 3, 0, 16) if rule == "shipped" else fs.fill_inputs(img, m, rule)
                s = class_scores(predictor._model_logits(np.stack(v).astype(np.float32)), 1, "logits")
                scores.append(_deletion_summary(s, 10, 3, np.linspace(0, 1, 11))["faithfulness"])
            scores = np.asarray(scores, float)
            print(f"{rule:10s} {kind:11s} on tumour {scores[on].mean():.2f} (n={on.sum()}), beside "
                  f"{scores[~on].mean():.2f} (n={(~on).sum()}); per image: "
                  + " ".join(f"{f.name.split('.')[0]}={'+' if o else '-'}{v:.2f}"
                             for f, o, v in zip(files, on, scores, strict=True)), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:] or ["shipped", "copy", "shift-copy"])
