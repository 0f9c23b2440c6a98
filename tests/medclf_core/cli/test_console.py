"""medclf_core.cli.console: what the commands print, from results made by hand (no model needed)."""

from __future__ import annotations

import json
from types import SimpleNamespace

from medclf_core.cli import console

EVALUATION = {
    "model": "chest", "dataset": "chest_xray", "split": "test", "n": 80, "accuracy": 0.91234,
    "ci95": {"accuracy": [0.8512, 0.9634]}, "auc": 0.95, "threshold": 0.35, "positive_class": "PNEUMONIA",
    "sensitivity": 0.95, "specificity": 0.875, "class_names": ["NORMAL", "PNEUMONIA"],
    "per_class": {"NORMAL": {"precision": 0.9, "recall": 0.875, "f1": 0.8874, "support": 40},
                  "PNEUMONIA": {"precision": 0.88, "recall": 0.95, "f1": 0.9137, "support": 40}},
    "confusion_matrix": [[35, 5], [2, 38]], "ece": 0.0412, "temperature": 1.37, "macro_f1": 0.91,
    "ood": {"checked": True, "n": 80, "n_flagged": 4, "fraction_flagged": 0.05,
            "metrics_without_flagged": {"n": 76, "accuracy": 0.92, "auc": None}},
    "skipped": [{"file": "bad.png", "error": "not an image"}],
}


def test_print_json_is_one_line_with_paths_as_text(capsys, tmp_path):
    console.print_json({"run_dir": tmp_path, "n": 3})
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and json.loads(out) == {"run_dir": str(tmp_path), "n": 3}


def test_predictions_flag_ood_and_show_the_map_with_its_faithfulness(capsys):
    probs = {"NORMAL": 0.25, "PNEUMONIA": 0.75}
    console.print_predictions([
        {"file": "a.png", "label": "PNEUMONIA", "probabilities": probs, "cam": "maps/000_a_cam.png",
         "faithfulness": -0.0012},
        {"file": "b.png", "label": "NORMAL", "probabilities": probs, "ood": True, "ood_reason": "modality MR"},
        {"file": "c.png", "label": "NORMAL", "probabilities": probs, "cam": "maps/001_c_cam.png", "faithfulness": None},
        {"file": "d.png", "error": "not an image"}])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == ("a.png: PNEUMONIA (P(PNEUMONIA) = 75.0%) [NORMAL 25.0%, PNEUMONIA 75.0%] -> "
                        "maps/000_a_cam.png (faithfulness 0.00)")
    assert lines[1].startswith("b.png: OUT OF DISTRIBUTION (modality MR); not a finding. Model output (not a finding)")
    assert "NORMAL (" not in lines[1]  # a refused image gets no decision
    assert lines[2].endswith("(faithfulness n/a)")
    assert lines[3] == "d.png: ERROR not an image"


def test_a_prediction_line_gives_the_decision_with_p_positive_borderline_and_capped(capsys):
    """Issue 24: NORMAL below the threshold reads with P(PNEUMONIA), not NORMAL's own probability; within
    0.05 of the threshold it is borderline; no probability prints as 100.0% or 0.0%."""
    rule = {"threshold": 0.75, "positive_class": "PNEUMONIA"}
    console.print_predictions([
        {"file": "a.png", "label": "NORMAL", "probabilities": {"NORMAL": 0.28, "PNEUMONIA": 0.72}, **rule},
        {"file": "b.png", "label": "PNEUMONIA", "probabilities": {"NORMAL": 0.0004, "PNEUMONIA": 0.9996}, **rule}])
    a, b = capsys.readouterr().out.splitlines()
    assert a.startswith("a.png: NORMAL (P(PNEUMONIA) = 72.0%, borderline), below the threshold 75.0%")
    assert "28.0%" not in a.split("[")[0]
    assert b.startswith("b.png: PNEUMONIA (P(PNEUMONIA) > 99%), at or above") and "<1%" in b and "100" not in b


def test_evaluation_text(capsys):
    console.print_evaluation(EVALUATION)
    out = capsys.readouterr().out
    assert "Model chest on chest_xray (test, n=80)" in out
    assert "Accuracy 0.9123  95% CI 0.851-0.963" in out
    assert "At threshold 0.350 on P(PNEUMONIA): sensitivity 0.9500, specificity 0.8750" in out
    assert "NORMAL              0.9000    0.8750    0.8874       40" in out
    assert "macro F1                                0.9100\n" in out  # the README lists it (session 21)
    assert "Expected calibration error 0.0412 (temperature 1.37)" in out
    assert "4 of 80 images flagged (5.0%)" in out and "without them (n=76): accuracy 0.9200\n" in out
    assert "skipped bad.png: not an image" in out
    console.print_evaluation({**EVALUATION, "ood": {}, "ci95": None, "temperature": None, "skipped": []})
    out = capsys.readouterr().out
    assert "Accuracy 0.9123\n" in out and "(uncalibrated)" in out and "not checked" in out


def test_runs_list_marks_small_test_sets_and_unreadable_runs(capsys):
    run = SimpleNamespace(name="chest", architecture="simple_cnn", class_names=["NORMAL", "PNEUMONIA"],
                          metrics={"accuracy": 0.9, "auc": None}, test_n=12, created="2026-01-01", is_toy=True)
    console.print_runs([run], [{"name": "broken", "reason": "card.json is damaged"}])
    lines = capsys.readouterr().out.splitlines()
    assert "acc 0.900 auc n/a n 12" in lines[0] and "(n < 30: too few test images)" in lines[0]
    assert lines[1].startswith("broken") and lines[1].endswith("UNREADABLE: card.json is damaged")
    console.print_runs([], [])
    assert capsys.readouterr().out == "No models registered yet.\n"


def test_runs_list_says_which_figures_are_cross_validated(capsys):
    """A small-data run's figures are out-of-fold predictions of every image, not a test split."""
    from medclf_core.formatting import CROSS_VALIDATION

    run = SimpleNamespace(name="sample", architecture="efficientnet_lite0", class_names=["NORMAL", "PNEUMONIA"],
                          metrics={"accuracy": 0.95, "auc": 0.986, "split": CROSS_VALIDATION}, test_n=80,
                          created="2026-01-01", is_toy=False)
    small = SimpleNamespace(**{**vars(run), "name": "tiny", "test_n": 20, "is_toy": True})
    console.print_runs([run, small], [])
    lines = capsys.readouterr().out.splitlines()
    assert "n 80 cross-validated  2026-01-01" in lines[0] and "too few" not in lines[0]
    assert lines[1].endswith("(n < 30: too few images)") and "test" not in lines[1]


def test_messages_and_progress_go_to_stderr(capsys, monkeypatch):
    import sys

    console.message("Wrote 2 PDF report(s) to out")
    console.progress_bar("Piped", enabled=True)(1, 2)  # stderr into a file or a pipe: no bar (session 21)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # a terminal
    bar = console.progress_bar("Reading", enabled=True)
    bar(1, 2)
    bar(2, 2)
    console.progress_bar("Silent", enabled=False)(1, 2)
    captured = capsys.readouterr()
    assert captured.out == "" and "Wrote 2 PDF report(s)" in captured.err
    assert "Reading" in captured.err and "Silent" not in captured.err and "Piped" not in captured.err


def test_refit_text(capsys):
    console.print_refit({"run_dir": "models/chest", "threshold": 0.41,
                         "ood": {"n_train": 60, "threshold": 12.345, "rule": "99th percentile", "val_fraction_flagged":
                                 0.0125, "n_val": 80},
                         "calibration": {"temperature": 1.5, "val_ece": [0.08, 0.03], "threshold_uncalibrated": 0.35}})
    out = capsys.readouterr().out
    assert "threshold 12.35 (99th percentile; flags 1.2% of 80 validation images)" in out
    assert "Temperature 1.5: validation ECE 0.0800 -> 0.0300; threshold 0.35 -> 0.41 (same decisions)" in out


def test_an_unfamiliar_result_prints_its_caution_and_the_summary_its_coverage(capsys):
    from medclf_core.cli.console import _print_ood_summary, print_predictions

    base = {"file": "a.png", "label": "yes", "probabilities": {"no": 0.1, "yes": 0.9}, "ood": False}
    print_predictions([{**base, "unfamiliar": True, "unfamiliar_reason": "unlike this model's training images"},
                       {**base, "file": "b.png", "unfamiliar": False}])
    out = capsys.readouterr().out.splitlines()
    assert out[1] == "  caution: unlike this model's training images" and len(out) == 3
    _print_ood_summary({"checked": True, "n": 10, "n_flagged": 1, "fraction_flagged": 0.1, "coverage": 0.9,
                        "n_unfamiliar": 3, "metrics_without_flagged": None})
    assert "coverage (share not refused) 90.0%; 3 shown with a caution" in capsys.readouterr().out
    # walk-through, round two: "without them (n=30)" when none of the 30 was refused
    _print_ood_summary({"checked": True, "n": 30, "n_flagged": 0, "fraction_flagged": 0.0, "coverage": 1.0,
                        "metrics_without_flagged": {"n": 30, "accuracy": 0.9}})
    out = capsys.readouterr().out
    assert "0 of 30 images flagged" in out and "without them" not in out


def test_an_epoch_line_leaves_out_metrics_the_phase_does_not_compute(capsys):
    # fine-tuning on cached activations reports no training accuracy: it must not read "acc 0.0000"
    printer = console.TrainProgressPrinter()
    printer({"event": "epoch", "epoch": 3, "epochs": 5, "seconds": 1.5, "eta_s": 3.0, "phase": "fine_tune",
             "metrics": {"loss": 0.25, "val_loss": 0.125, "val_accuracy": 0.9}})
    printer({"event": "epoch", "epoch": 1, "epochs": 5, "seconds": 1.5, "eta_s": 3.0,
             "metrics": {"loss": 0.5, "accuracy": 0.75, "val_loss": 0.5, "val_accuracy": 0.8}})
    first, second = capsys.readouterr().err.strip().splitlines()
    assert " acc " not in first and "val_acc 0.9" in first and "loss 0.25" in first
    assert "acc 0.75" in second


def test_a_prediction_line_names_every_class_in_the_cards_words(capsys):
    """Walk-through, round three: "no tumour (P(tumour) = 2.4%) ... [no 97.6%, yes 2.4%]" on one line."""
    console.print_predictions([{"file": "a.png", "label": "no", "probabilities": {"no": 0.976, "yes": 0.024},
                                "threshold": 0.75, "positive_class": "yes", "ood": False,
                                "class_labels": {"no": "no tumour", "yes": "tumour"}}])
    line = capsys.readouterr().out.splitlines()[0]
    assert line.startswith("a.png: no tumour (P(tumour) = 2.4%)") and "[no tumour 97.6%, tumour 2.4%]" in line


def test_the_terminal_gets_medclf_warnings_but_not_what_the_user_was_already_told(capsys):
    """A damaged JPEG printed the decoder's "OSError: image file is truncated" on stderr beside the plain message
    ("The JPEG file is damaged or incomplete ..."); the detail belongs to a server log, not the terminal."""
    import logging

    from medclf_core.errors import SHOWN_TO_USER

    console.log_to_terminal()
    console.log_to_terminal()  # once per process, however often main() runs
    logging.getLogger("medclf").warning("decoder detail: %s", "OSError", extra=SHOWN_TO_USER)
    logging.getLogger("medclf_core.trust.body_part").warning("the probe is stale")
    err = capsys.readouterr().err
    assert "decoder detail" not in err and err.count("warning: the probe is stale") == 1


def test_a_damaged_file_reads_one_plain_line_on_the_terminal(trained_run, tmp_path):
    """In a real process (pytest's own log handlers would hide Python's last-resort printing of warnings)."""
    import subprocess
    import sys

    from helpers import CHEST_SAMPLE, REPO

    jpeg = next((CHEST_SAMPLE / "NORMAL").iterdir()).read_bytes()
    (tmp_path / "cut.jpeg").write_bytes(jpeg[: len(jpeg) // 3])
    command = [sys.executable, "-m", "medclf_core", "predict", str(trained_run), str(tmp_path / "cut.jpeg")]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert "cut.jpeg: ERROR The JPEG file is damaged or incomplete" in done.stdout
    assert "truncated" not in done.stderr and "not decoded" not in done.stderr, done.stderr


def test_the_cards_known_limit_follows_the_lines_once_when_any_image_got_a_finding(capsys):
    finding = {"file": "a.png", "label": "yes", "probabilities": {"no": 0.1, "yes": 0.9}, "threshold": 0.75,
               "positive_class": "yes", "ood": False}
    negative = {**finding, "file": "b.png", "label": "no", "probabilities": {"no": 0.9, "yes": 0.1}}
    console.print_predictions([finding, finding, negative], "it also calls a stroke tumour.")
    assert capsys.readouterr().out.count("Known limit of this model: it also calls a stroke tumour.") == 1
    console.print_predictions([negative, {**finding, "ood": True, "ood_reason": "far"}], "it also calls a stroke.")
    console.print_predictions([finding], None)
    assert "Known limit" not in capsys.readouterr().out
