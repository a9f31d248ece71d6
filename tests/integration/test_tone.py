"""Tone steering on the real default model: a batched row is exactly `generate` under `steer`, the
command line reproduces the API's numbers with the same seeds, and steering with happy at the
shipped configuration raises VADER valence on the shipped result's prompts and seeds, with the same
continuations as the shipped file."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import explorer as ex
from explorer import tone
from explorer.episodes import Episode, Message, render_text
from explorer.steering import steering_deltas

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def vectors(default_model):
    return ex.load_vectors(default_model)


def test_a_batched_row_is_generate_under_steer(default_model, vectors):
    model, prompt, strength, layers = default_model, "Describe a walk along the river.", 0.2, [12, 14, 16]
    ids = model.tokenize(render_text(model, [Message("user", prompt)], reply=True), templated=model.chat)["input_ids"]
    _, deltas = steering_deltas(model, vectors["sad"], strength, layers, vectors)
    stacked = {layer: torch.cat([torch.zeros_like(d), d]) for layer, d in deltas.items()}
    unsteered_row, steered_row = tone.sample_rows(model, ids, stacked, 12, 0.7, seed=3)

    episode = Episode(id="tone", title="tone", description="", messages=(Message("user", prompt),), control=None)
    plain = ex.generate(model, episode, vectors, max_new_tokens=12, temperature=0.7, seed=3)
    with ex.steer(model, vectors["sad"], strength, layers=layers, positions=slice(len(ids) - 1, None)):
        steered = ex.generate(model, episode, vectors, max_new_tokens=12, temperature=0.7, seed=3)
    assert unsteered_row == plain.token_ids
    assert steered_row == steered.token_ids
    assert steered_row != unsteered_row  # the push changed the text


def test_the_loss_of_a_continuation_is_the_full_pass_loss(default_model):
    model = default_model
    ids = model.tokenize("The train left the station at noon.")["input_ids"]
    prompt, continuations = ids[:4], [ids[4:], ids[4:6], []]
    losses = tone.continuation_loss(model, prompt, continuations)
    with torch.inference_mode():
        logits = model.hf(input_ids=torch.tensor([ids])).logits[0].float()
    nll = -torch.log_softmax(logits[:-1], -1).gather(-1, torch.tensor(ids[1:])[:, None])[:, 0]
    assert losses[0] == pytest.approx(float(nll[3:].mean()), abs=1e-4)
    assert losses[1] == pytest.approx(float(nll[3:5].mean()), abs=1e-4)
    assert np.isnan(losses[2])


def test_the_command_line_reproduces_the_api_with_the_same_seeds(default_model, vectors, tmp_path):
    prompts = tone.load_prompts()[:2]
    (tmp_path / "p.json").write_text(json.dumps({"prompts": prompts}))
    out = tmp_path / "tone.json"
    command = [sys.executable, "-m", "explorer", "tone", "--emotion", "happy,sad", "--strengths", "0,0.2",
               "--layers", "12,14,16", "--random", "2", "--max-new-tokens", "8", "--seed", "5",
               "--prompts", str(tmp_path / "p.json"), "--out", str(out)]  # fmt: skip
    run = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr
    assert "happy: VADER valence slope" in run.stdout
    from_cli = ex.load_tone_response(out)
    from_api = ex.tone_response(default_model, vectors, ["happy", "sad"], [0, 0.2], [12, 14, 16], prompts,
                                n_random=2, seed=5, max_new_tokens=8)  # fmt: skip
    assert from_cli.table["text"].tolist() == from_api.table["text"].tolist()
    assert np.allclose(from_cli.table["valence"], from_api.table["valence"])
    assert np.allclose(from_cli.table["loss"], from_api.table["loss"], atol=1e-5)
    assert from_cli.emotions["happy"].slope == pytest.approx(from_api.emotions["happy"].slope)
    assert from_cli.random_slopes == pytest.approx(from_api.random_slopes)
    # a second run refuses to overwrite without --force
    again = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert again.returncode == 2 and "already exists" in again.stderr


def test_steering_at_the_shipped_configuration_moves_vader_the_predicted_way(default_model, vectors):
    shipped = ex.load_tone_response(default_model.name)
    top, n = max(shipped.strengths), 12
    # the emotions alone at the strongest strength, on the first prompts, with the shipped seeds
    result = ex.tone_response(
        default_model, vectors, list(shipped.emotions), [0, top], list(shipped.layers), list(shipped.prompts[:n]),
        n_random=0, seed=shipped.seed, temperature=shipped.temperature, max_new_tokens=shipped.max_new_tokens,
    )  # fmt: skip
    frame = result.conditions().set_index(["direction", "strength"])
    baseline = frame.loc[("unsteered", 0.0), "valence"]
    # happy raises valence (shipped, these prompts: -0.06 -> +0.45); sad does not lower it (+0.11),
    # but stays well below happy
    assert frame.loc[("happy", top), "valence"] > baseline + 0.2
    assert frame.loc[("sad", top), "valence"] < frame.loc[("happy", top), "valence"] - 0.15
    assert frame.loc[("happy", top), "fluent"] and frame.loc[("sad", top), "fluent"]
    # the same continuations as the shipped file (batched arithmetic aside)
    table = shipped.table
    rows = table[(table["prompt"] < n) & (table["kind"] != "random") & table["strength"].isin([0, top])]
    same = (rows["text"].to_numpy() == result.table["text"].to_numpy()).mean()
    assert same > 0.8


def test_try_prompt_replays_a_shipped_prompt_and_continues_a_new_one(default_model, vectors):
    shipped = ex.load_tone_response(default_model.name)
    top, i = max(shipped.strengths), 5
    replay = shipped.try_prompt(default_model, vectors, shipped.prompts[i], seed=shipped.seed + i)
    assert list(replay["direction"]) == ["unsteered", *shipped.emotions]
    assert set(replay["strength"]) == {0.0, top}
    table = shipped.table
    rows = table[(table["prompt"] == i) & (table["kind"] != "random") & table["strength"].isin([0, top])]
    assert list(replay["text"]) == list(rows["text"])  # token for token, as the notebook promises
    assert np.allclose(replay["valence"], rows["valence"])

    mine = shipped.try_prompt(default_model, vectors, "Describe a quiet kitchen at noon.", strength=0.05, seed=7)
    assert set(mine["strength"]) == {0.0, 0.05} and mine["text"].str.len().gt(0).all()
    assert mine["text"].nunique() > 1  # the push changed at least one continuation
    with pytest.raises(ex.ExplorerError, match="prompt is empty"):
        shipped.try_prompt(default_model, vectors, "  ")
    with pytest.raises(ex.ExplorerError, match="strength 0"):
        shipped.try_prompt(default_model, vectors, "Describe a kitchen.", strength=0)


def test_bad_input_gets_one_line_errors(default_model, vectors):
    with pytest.raises(ex.ExplorerError, match="non-zero strength"):
        ex.tone_response(default_model, vectors, strengths=[0], prompts=["a", "b"])
    with pytest.raises(ex.ExplorerError, match="at least two prompts"):
        ex.tone_response(default_model, vectors, prompts=["only one"])
    with ex.steer(default_model, vectors["happy"], 0.05):
        with pytest.raises(ex.ExplorerError, match="already steered"):
            ex.tone_response(default_model, vectors, prompts=["a", "b"])


def test_the_second_judge_tells_happy_from_sad_text():
    from explorer.models import ZOO

    judge_name = "qwen2.5-coder-0.5b-instruct"
    if not ZOO[judge_name].installed:
        pytest.skip(f"{judge_name} is not installed (explorer models --install {judge_name})")
    judge = tone.ToneJudge(ex.load_model(judge_name))
    scores = judge.score([
        "What a wonderful day! We laughed and danced in the sunshine, so happy together.",
        "She cried alone in the dark room; everything she loved was gone and nothing would ever be the same.",
        "The man stood at the curb, his eyes lost in thought as he watched the bus go by.",
    ])  # fmt: skip
    assert scores[0] > 1 and scores[1] < -0.5 and scores[0] > scores[2] > scores[1]
