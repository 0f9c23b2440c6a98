"""Refused and unfamiliar shares through the Predictor (feature tiers, DICOM header with PatientAge, modality router).

The app's path for the bundled brain and chest models on capped sets from ../shared/data; each refusal is
attributed to the router and/or the feature gate (an image can be refused by both). Usage::

    PYTHONPATH=. .venv/bin/python bench/ood_tiers.py
"""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pathlib import Path
from ood_scores import folder_images, SHARED
from medclf_core.inference.predictor import Predictor
REPO = Path(__file__).resolve().parent.parent
sets = {"brain-mri-tumour": {"Sartaj brain MRI (other source)": folder_images(SHARED/"brain_tumor_sartaj", 150),
                             "MedPix CT": folder_images(SHARED/"modality"/"CT", 100),
                             "MedPix MRI other body parts": folder_images(SHARED/"modality"/"MRI", 100),
                             "Kermany chest X-ray": folder_images(SHARED/"chest_xray_pneumonia", 100),
                             "DICOM samples": sorted((SHARED/"dicom_samples").rglob("*.dcm"))},
        "chest-xray-pneumonia": {"demo chest X-ray": folder_images(SHARED/"demo_samples", 0),
                                 "modality/XRAY chest": folder_images(SHARED/"modality"/"XRAY", 100),
                                 "MedPix CT": folder_images(SHARED/"modality"/"CT", 100),
                                 "Br35H brain MRI": folder_images(SHARED/"brain_tumor_br35h", 100),
                                 "DICOM samples": sorted((SHARED/"dicom_samples").rglob("*.dcm"))}}
for m, d in sets.items():
    p = Predictor.from_run(REPO / "models" / m)
    print(m, "router:", p.router is not None, flush=True)
    for name, files in d.items():
        rs = [r for r in p.predict_files(files) if "error" not in r]
        ref = [r for r in rs if r["ood"]]
        by_router = sum("imaging-modality" in (r["ood_reason"] or "") for r in ref)
        by_feat = sum("features are far" in (r["ood_reason"] or "") for r in ref)
        unf = sum(bool(r.get("unfamiliar")) for r in rs)
        print(f"  {name:32s} n={len(rs):4d} refused {len(ref)} ({len(ref)/max(len(rs),1):.0%}; router {by_router}, "
              f"features {by_feat}) unfamiliar {unf} ({unf/max(len(rs),1):.0%})", flush=True)
        if name == "DICOM samples":
            for r in rs: print("     ", Path(r["file"]).name, r["ood"], r["ood_reason"])
