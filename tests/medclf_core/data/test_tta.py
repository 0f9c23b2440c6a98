"""medclf_core.data.tta: test-time views, their safety checks, and their use in training and prediction."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import TINY, make_pattern_dataset

from medclf_core.errors import MedclfError
from medclf_core.inference.predictor import Predictor
from medclf_core.io.atomic import read_json
from medclf_core.training import TrainConfig, train
from medclf_core.data.tta import VIEWS, average_views, check_views, tf_view


def test_check_views_rejects_unknown_and_unsafe_views():
    assert check_views(None) == ()
    assert check_views(["hflip", "hflip"]) == ("hflip",)
    with pytest.raises(ValueError, match="Unknown test-time augmentation 'rot90'"):
        check_views(["rot90"])
    with pytest.raises(ValueError, match="laterality"):
        check_views(["hflip"], horizontal_flip_trained=False)


def test_average_views_is_the_mean_over_the_original_and_its_mirror():
    batch = np.zeros((2, 4, 6, 1), dtype=np.float32)
    batch[:, :, :3] = 1.0  # left half bright

    def left_half_mean(x):  # a "model" that only looks at the left half: mirroring changes its answer
        return x[:, :, :3].mean(axis=(1, 2, 3))[:, None]

    np.testing.assert_allclose(average_views(left_half_mean, batch, ()), [[1.0], [1.0]])
    np.testing.assert_allclose(average_views(left_half_mean, batch, ["hflip"]), [[0.5], [0.5]])


@pytest.mark.parametrize("name", list(VIEWS))
def test_tf_view_matches_numpy_view(name):
    batch = np.random.default_rng(0).integers(0, 255, (3, 5, 7, 1)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(tf_view(name, batch)), VIEWS[name](batch))


@pytest.fixture(scope="module")
def tta_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("tta")
    data = make_pattern_dataset(root / "data", n_per_class=12, size=TINY)
    return train(TrainConfig(data=str(data), arch="simple_cnn", epochs=1, image_size=TINY, channels=1, batch_size=8,
                             augment="default", tta=["hflip"]), models_dir=root / "models")


@pytest.mark.slow
def test_training_records_tta_and_prediction_reproduces_it(tta_run):
    card = json.loads((tta_run / "card.json").read_text())
    assert card["tta"] == ["hflip"]
    evaluation = read_json(tta_run, "evaluation.json")
    data = tta_run.parent.parent / "data"
    files = [str(data / p["file"]) for p in evaluation["predictions"]]
    recorded = np.array([p["probabilities"] for p in evaluation["predictions"]])

    with_tta = Predictor.from_run(tta_run)
    assert with_tta.tta == ("hflip",)
    got = np.array([list(r["probabilities"].values()) for r in with_tta.predict_files(files)])
    np.testing.assert_allclose(got, recorded, atol=1e-4)  # the recorded test metrics used the same views

    plain = Predictor.from_run(tta_run, tta=[])
    prepared = np.stack([plain.prepare(_load(f)) for f in files])
    direct = plain.predict_batch(prepared)
    mirrored = plain.predict_batch(prepared[:, :, ::-1])
    np.testing.assert_allclose(got, (direct + mirrored) / 2, atol=1e-5)
    assert not np.allclose(direct, got, atol=1e-6)  # the untrained-ish model is not mirror-symmetric


def _load(path):
    from medclf_core.io.images import load_image

    return load_image(path).pixels


def test_hflip_tta_is_refused_without_flip_augmentation(chest_sample, tmp_path):
    with pytest.raises(MedclfError, match="laterality"):
        train(TrainConfig(data=str(chest_sample), epochs=1, image_size=TINY, channels=1, tta=["hflip"]),
              models_dir=tmp_path / "m")
    assert not any((tmp_path / "m").glob("*/card.json"))


def test_unknown_tta_in_a_card_is_a_model_error(tta_run):
    from medclf_core.errors import ModelError
    from medclf_core.registry.store import load_run

    model, card = load_run(tta_run)
    with pytest.raises(ModelError, match="Unknown test-time augmentation"):
        Predictor(model, {**card, "tta": ["spin"]})


def test_cli_predict_uses_the_card_views_unless_told_otherwise(tta_run, capsys):
    from medclf_core.cli.commands import main

    image = next((tta_run.parent.parent / "data").rglob("*.png"))
    outputs = {}
    for flag in ([], ["--tta", "none"], ["--tta", "hflip"]):
        assert main(["predict", str(tta_run), str(image), "--json", *flag]) == 0
        outputs[" ".join(flag)] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])[0]["probabilities"]
    assert outputs[""] == outputs["--tta hflip"]
    assert outputs[""] != outputs["--tta none"]
