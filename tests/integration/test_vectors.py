"""Emotion vectors on the real default model: shipped file, rebuild, user emotions, validation."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import explorer as ex
from explorer import cache, validation
from explorer import vectors as vec
from explorer.corpus import load_corpus

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def shipped():
    return ex.EmotionVectors.load(vec.shipped_path(ex.DEFAULT_MODEL))


@pytest.fixture(scope="module")
def rebuilt(default_model, tmp_path_factory):
    """A full rebuild from the corpus in an empty cache: every story through the model again."""
    root = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(cache.CACHE_ENV, str(root))
        # the shipped file was built from corpus v2 with the default recipe; the rebuild must reproduce it
        built = vec.build_vectors(default_model, progress=False)
        extraction = vec.extract(default_model, load_corpus(), vec.Recipe(), progress=False)
    return built, extraction, root


def test_shipped_vectors_cover_the_corpus_at_every_layer(shipped, default_model):
    shipped.check_model(default_model)
    assert shipped.emotions == load_corpus().emotions and len(shipped) >= 40
    assert shipped.directions.shape == (30, len(shipped), 576)
    assert torch.allclose(shipped.directions.norm(dim=-1), torch.ones(30, len(shipped)), atol=1e-4)
    assert shipped.metadata["corpus_sha256"] == load_corpus().fingerprint()
    # built by the recipe chosen on leave-one-register-out accuracy (docs/VECTORS.md), and says so
    assert vec.Recipe.from_metadata(shipped.metadata) == vec.Recipe()
    assert shipped.readout_mode == "grand_mean" and shipped.metadata["recipe"]["directions"] == "shrinkage_lda"
    assert shipped.metadata["stories_per_emotion"] == {e: 80 for e in shipped.emotions}
    assert shipped.metadata["model_sha256"] == ex.ZOO[ex.DEFAULT_MODEL].sha256
    assert shipped.null_directions.shape == shipped.directions.shape
    assert (shipped.neutral_std > 0).all() and (shipped.residual_norm > 0).all()
    assert ex.load_vectors(default_model).emotions == shipped.emotions


def test_rebuild_reproduces_the_shipped_file(rebuilt, shipped):
    built, _, _ = rebuilt
    assert built.emotions == shipped.emotions
    assert torch.allclose(built.directions, shipped.directions, atol=2e-4)
    assert torch.allclose(built.neutral_mean, shipped.neutral_mean, rtol=1e-3, atol=1e-3)
    assert torch.allclose(built.neutral_std, shipped.neutral_std, rtol=1e-3)
    assert torch.allclose(built.residual_norm, shipped.residual_norm, rtol=1e-4)


def test_vectors_for_another_width_are_refused(shipped):
    other = next((n for n, e in ex.ZOO.items() if e.installed and e.width != 576), None)
    if other is None:
        pytest.skip("no second packaged model installed")
    with pytest.raises(
        ex.ExplorerError, match=r"built for 'smollm2-135m-instruct' \(width 576.*explorer vectors build --model"
    ):
        shipped.check_model(ex.load_model(other))


def test_users_add_an_emotion_from_their_own_stories(default_model, rebuilt, tmp_path, monkeypatch):
    _, _, root = rebuilt
    monkeypatch.setenv(cache.CACHE_ENV, str(root))  # reuse the rebuild's extraction
    stories = tmp_path / "wistful.jsonl"
    texts = [
        "Mara found her grandmother's recipe card in a drawer, the ink faded, and read it twice "
        "without cooking anything.",
        "He walked past the shuttered cinema where they had met and slowed down, half smiling at "
        "the empty poster frames.",
        "The old team photo hung crooked in the hallway; Ji-ho straightened it and stood there "
        "longer than he needed to.",
        "She played the song from that summer once, then turned it off before the chorus and looked out at the rain.",
    ]
    stories.write_text("\n".join(json.dumps({"emotion": "wistful", "text": t}) for t in texts))
    built = ex.build_vectors(default_model, ex.read_stories(stories), progress=False)
    assert built.emotions[-1] == "wistful" and len(built) == len(load_corpus().emotions) + 1
    assert built.metadata["stories_per_emotion"]["wistful"] == 4
    cos = built.cosine_matrix(default_model.default_layer)["wistful"].drop("wistful")
    # a sanity check of meaning, not a hard-coded number: wistful sits nearer nostalgic than furious
    assert cos["nostalgic"] > cos["furious"]
    out = tmp_path / "v.safetensors"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "explorer",
            "vectors",
            "build",
            "--stories",
            str(stories),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, cache.CACHE_ENV: str(root)},
    )
    assert result.returncode == 0, result.stderr
    assert ex.EmotionVectors.load(out).emotions[-1] == "wistful"


def test_validation_beats_its_floors_at_the_rule_layer(default_model, rebuilt):
    built, extraction, _ = rebuilt
    layer = default_model.default_layer
    accuracy = validation.heldout_accuracy(extraction, vec.Recipe())
    shuffled = validation.heldout_accuracy(extraction, vec.Recipe(), labels=vec.shuffled_labels(extraction.labels, 0))
    chance = 1 / len(built)
    assert accuracy[layer] > 5 * chance
    assert shuffled[layer] < 2.5 * chance
    geo = validation.geometry(built, draws=20)
    # valence is linearly readable from the vectors (held-out probe), unlike from random directions;
    # PC1 itself is not valence on this model (docs/VECTORS.md), so that is not asserted
    assert geo.loc[layer, "valence_probe_r"] > 0.4
    assert geo.loc[layer, "valence_probe_r"] > geo.loc[layer, "random_valence_probe_r"] + 0.3


def test_score_cli_ranks_labelled_texts_sensibly(tmp_path):
    texts = tmp_path / "texts.jsonl"
    texts.write_text(
        json.dumps(
            {
                "id": "calm",
                "text": "The lake was still. She sat on the dock with her tea, breathing slowly, "
                "watching the mist lift off the water while a loon called somewhere far away.",
            }
        )
        + "\n"
        + json.dumps(
            {
                "id": "afraid",
                "text": "Footsteps behind him again. He walked faster, keys clenched between "
                "his fingers, heart hammering, not daring to look back at the dark street.",
            }
        )
        + "\n"
    )
    out = tmp_path / "scores.csv"
    subprocess.run([sys.executable, "-m", "explorer", "score", str(texts), "--out", str(out)], check=True)
    import pandas as pd

    table = pd.read_csv(out).set_index("id")
    assert table.loc["calm", "calm"] > table.loc["afraid", "calm"]
    assert table.loc["afraid", "afraid"] > table.loc["calm", "afraid"]
    assert np.isfinite(table.to_numpy()).all()


def test_cli_rejects_bad_input_in_one_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1, "txt": "x"}\n')
    result = subprocess.run([sys.executable, "-m", "explorer", "score", str(bad)], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {bad}, line 1: unknown field 'txt'; allowed: id, text"


@pytest.mark.parametrize("path", sorted(vec.SHIPPED_DIR.glob("*.safetensors")), ids=lambda p: p.stem)
def test_every_shipped_file_matches_its_model_and_says_how_it_was_built(path):
    from explorer.corpus import V1_CORPUS_SHA256

    vectors = ex.EmotionVectors.load(path)
    entry = ex.ZOO[path.stem]
    assert vectors.directions.shape == (entry.n_layers, 40, entry.width)
    assert vectors.metadata["model_sha256"] == entry.sha256
    recipe = vec.Recipe.from_metadata(vectors.metadata)
    if vectors.metadata["corpus_sha256"] == V1_CORPUS_SHA256:  # built before corpus v2 (docs/VECTORS.md)
        assert recipe.directions == "mean_difference" and vectors.readout_mode == "neutral_z"
    else:  # everything built since: corpus v2, the default recipe
        assert vectors.metadata["corpus_sha256"] == load_corpus().fingerprint() and recipe == vec.Recipe()
        assert vectors.readout_mode == recipe.readout


def test_score_texts_can_centre_on_the_texts_themselves(default_model, shipped):
    texts = [
        "The lake was still. She sat on the dock with her tea, breathing slowly, watching the mist lift.",
        "Footsteps behind him again. He walked faster, keys clenched, heart hammering, not daring to look back.",
        "She opened the envelope, read the first line and screamed, then hugged everyone in the kitchen twice.",
    ]
    plain = ex.score_texts(default_model, shipped, texts, progress=False)
    centred = ex.score_texts(default_model, shipped, texts, progress=False, centre="texts")
    # centring on the texts' own mean activation = subtracting each emotion's mean read-out over them
    np.testing.assert_allclose(centred.to_numpy(), plain.to_numpy() - plain.to_numpy().mean(0), atol=1e-4)
    assert abs(centred.to_numpy().mean(0)).max() < 1e-4
    assert centred.loc[0, "calm"] > centred.loc[1, "calm"] and centred.loc[1, "afraid"] > centred.loc[0, "afraid"]
    with pytest.raises(ex.ExplorerError, match="at least two texts"):
        ex.score_texts(default_model, shipped, texts[:1], progress=False, centre="texts")
    with pytest.raises(ex.ExplorerError, match="centre 'mean'"):
        ex.score_texts(default_model, shipped, texts, progress=False, centre="mean")


def test_extraction_cache_is_tied_to_its_inputs(default_model, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path))
    full = load_corpus()
    pick = [s for s in full.stories if s.emotion in ("calm", "afraid") and s.topic in (20, 21)]
    small = ex.Corpus(tuple(pick), full.neutral[:2], full.neutral_topics[:2])
    other = ex.Corpus(tuple(pick[:3]), full.neutral[:2], full.neutral_topics[:2])
    first = vec.extract(default_model, small, vec.Recipe(), progress=False)
    path = vec._extraction_cache_path(default_model, small, vec.Recipe())
    # another corpus's file under this corpus's name (a copied or stale cache): never returned as this one's
    vec.extract(default_model, other, vec.Recipe(), progress=False)
    path.write_bytes(vec._extraction_cache_path(default_model, other, vec.Recipe()).read_bytes())
    with caplog.at_level("WARNING"):
        again = vec.extract(default_model, small, vec.Recipe(), progress=False)
    assert "belongs to other inputs" in caplog.text
    assert again.story_means.shape == first.story_means.shape == (len(pick), 30, 576)
    assert torch.allclose(again.story_means, first.story_means)
    caplog.clear()
    with caplog.at_level("WARNING"):
        vec.extract(default_model, small, vec.Recipe(), progress=False)  # rewritten with its own key: reused
    assert "recomputing" not in caplog.text
