"""medclf_core.cli.commands: ``recalibrate --site`` on a tiny model and dataset, ``--site`` on predict and
evaluate, unknown and bad site names, and outputs without ``--site`` byte-for-byte as before the site existed."""

from __future__ import annotations

import json
import shutil

import pytest

from medclf_core.cli.commands import main


@pytest.fixture
def models(refitted, tmp_path):
    """A models folder holding a copy of the refitted tiny run (gate and temperature) as 'tiny'."""
    root = tmp_path / "models"
    shutil.copytree(refitted[0], root / "tiny")
    card = json.loads((root / "tiny" / "card.json").read_text())
    (root / "tiny" / "card.json").write_text(json.dumps({**card, "name": "tiny"}))
    return root


def _outputs(models, chest_sample, sample_images, capsys, *site):
    """stdout of ``predict --json``, ``evaluate --json`` and ``evaluate`` (text), with ``site`` flags added."""
    files = [str(p) for p in sample_images[:3]]
    out = []
    for argv in (["predict", "tiny", *files, "--json"],
                 ["evaluate", "tiny", str(chest_sample), "--json", "--bootstrap", "50"],
                 ["evaluate", "tiny", str(chest_sample), "--bootstrap", "50"]):
        assert main([*argv, "--models-dir", str(models), "--no-progress", *site]) == 0
        out.append(capsys.readouterr().out)
    return out


def test_recalibrate_then_site_flags(models, chest_sample, sample_images, capsys):
    before = _outputs(models, chest_sample, sample_images, capsys)
    card_bytes = (models / "tiny" / "card.json").read_bytes()

    assert main(["recalibrate", "tiny", str(chest_sample), "--site", "north", "--models-dir", str(models),
                 "--no-progress", "--bootstrap", "50"]) == 1  # the model's own training images: refused
    text = capsys.readouterr().out
    assert "WARNING: " in text and "of the 80 evaluated images are identical" in text and "after (site)" in text
    assert "Not saved" in text and "--force" in text and not (models / "tiny" / "sites").exists()
    assert main(["recalibrate", "tiny", str(chest_sample), "--site", "north", "--models-dir", str(models),
                 "--json", "--no-progress", "--bootstrap", "50", "--force"]) == 0
    rec = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rec["path"] == str(models / "tiny" / "sites" / "north.json")
    assert rec["n"] == 80 and rec["target"]["value"] == 0.95 and {"before", "after"} <= set(rec)
    assert (models / "tiny" / "card.json").read_bytes() == card_bytes

    assert _outputs(models, chest_sample, sample_images, capsys) == before  # without --site: unchanged

    pred, ev, text = _outputs(models, chest_sample, sample_images, capsys, "--site", "north")
    assert all(r["calibration"] == "site:north" and r["threshold"] == rec["threshold"]
               for r in json.loads(pred.strip().splitlines()[-1]))
    ev = json.loads(ev.strip().splitlines()[-1])
    assert ev["calibration"] == "site:north" and ev["temperature"] == rec["temperature"]
    assert "Calibration: site:north" in text
    assert "WARNING: These are the images site 'north' was calibrated on" in text  # evaluated on its fitting images
    assert "calibrated on" not in before[2]

    assert main(["recalibrate", "tiny", str(chest_sample), "--site", "south", "--models-dir", str(models),
                 "--no-progress", "--bootstrap", "0", "--target-sensitivity", "0.9", "--force"]) == 0
    text = capsys.readouterr().out
    assert "before (card)" in text and "after (site)" in text and "sensitivity >= 0.9" in text


def test_unknown_and_bad_site_names_are_one_line_errors(models, chest_sample, sample_images, capsys):
    assert main(["predict", "tiny", str(sample_images[0]), "--models-dir", str(models), "--site", "nowhere"]) == 1
    err = capsys.readouterr().err
    assert "No site calibration 'nowhere'" in err and "known sites: none" in err and "Traceback" not in err
    assert main(["recalibrate", "tiny", str(chest_sample), "--site", "../up", "--models-dir", str(models),
                 "--no-progress"]) == 1
    assert "not a valid site name" in capsys.readouterr().err
    assert not (models / "tiny" / "sites").exists() and not (models / "up.json").exists()
    assert main(["recalibrate", "tiny", str(chest_sample), "--site", "x", "--target-sensitivity", "1.5",
                 "--models-dir", str(models)]) == 2
    assert "--target-sensitivity" in capsys.readouterr().err
