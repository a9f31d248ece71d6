"""The recipe's linear algebra and the EmotionVectors object, on synthetic activations."""

from dataclasses import asdict

import numpy as np
import pytest
import torch

from explorer import ExplorerError
from explorer.vectors import (
    EmotionVectors,
    Extraction,
    Recipe,
    denoising_basis,
    emotion_directions,
    lda_directions,
    pca_scores,
    vectors_from_extraction,
)

WIDTH, LAYERS = 16, 3
EMOTIONS = ["joy", "fear", "calm"]


def synthetic_extraction(seed=0, stories_per_emotion=12):
    """Stories = emotion signal along a known axis + a shared nuisance direction + noise."""
    g = torch.Generator().manual_seed(seed)
    signal = torch.eye(WIDTH, dtype=torch.float64)[:3] * 5  # joy, fear, calm on axes 0, 1, 2
    nuisance = torch.zeros(WIDTH, dtype=torch.float64)
    nuisance[5] = 1.0
    means, labels, topics = [], [], []
    for e, emotion in enumerate(EMOTIONS):
        for s in range(stories_per_emotion):
            noise = torch.randn(LAYERS, WIDTH, generator=g, dtype=torch.float64) * 0.5
            story = signal[e] + 20 * torch.randn(1, generator=g).item() * nuisance + noise
            means.append(story)
            labels.append(emotion)
            topics.append(s % 5)
    cov = torch.eye(WIDTH, dtype=torch.float64).repeat(LAYERS, 1, 1) * 0.01
    cov[:, 5, 5] = 100.0  # neutral text varies mostly along the nuisance axis
    return Extraction(
        torch.stack(means),
        labels,
        topics,
        torch.zeros(LAYERS, WIDTH, dtype=torch.float64),
        cov,
        torch.full((LAYERS,), 7.0, dtype=torch.float64),
        1000,
    )


def test_denoising_basis_takes_the_components_explaining_the_fraction():
    cov = torch.diag(torch.tensor([10.0, 5.0, 3.0, 2.0], dtype=torch.float64))
    assert denoising_basis(cov, 0.5).shape == (4, 1)  # 10/20 = 0.5
    assert denoising_basis(cov, 0.6).shape == (4, 2)  # needs 15/20
    assert denoising_basis(cov, 0.0).shape == (4, 0)
    assert torch.allclose(denoising_basis(cov, 0.5)[:, 0].abs(), torch.tensor([1.0, 0, 0, 0], dtype=torch.float64))


def test_recipe_recovers_the_planted_directions_and_removes_the_nuisance():
    x = synthetic_extraction()
    v = vectors_from_extraction(x, Recipe(directions="mean_difference"), {"model": "synthetic"})
    assert v.emotions == EMOTIONS
    for layer in range(LAYERS):
        d = v.at(layer)
        assert torch.allclose(d.norm(dim=-1), torch.ones(3), atol=1e-5)
        assert d[:, 5].abs().max() < 1e-6  # nuisance axis projected out
        # joy's vector points to joy's axis away from the others (mean over emotions subtracted)
        assert d[0, 0] > 0.7 and d[0, 1] < 0 and d[0, 2] < 0
    without = vectors_from_extraction(x, Recipe(denoise_variance=0, directions="mean_difference"), {"model": "s"})
    assert without.at(0)[:, 5].abs().max() > 0.05  # without denoising the nuisance leaks in
    assert v.metadata["denoise_components"] == [1, 1, 1]


def test_grand_mean_is_the_mean_over_emotions_not_stories():
    means = torch.tensor([[[1.0, 0]], [[1.0, 0]], [[1.0, 0]], [[0, 1.0]]], dtype=torch.float64)
    directions, grand = emotion_directions(
        means, ["a", "a", "a", "b"], ["a", "b"], [torch.zeros(2, 0, dtype=torch.float64)]
    )
    assert torch.allclose(grand[0], torch.tensor([0.5, 0.5], dtype=torch.float64))
    assert torch.allclose(directions[0, 0], -directions[0, 1])


def test_calibration_z_scores_neutral_text_to_zero_mean_unit_variance():
    x = synthetic_extraction()
    g = torch.Generator().manual_seed(1)
    neutral = torch.randn(4000, WIDTH, generator=g, dtype=torch.float64) * torch.linspace(0.5, 2, WIDTH) + 3
    x.neutral_mean = neutral.mean(0).repeat(LAYERS, 1)
    x.neutral_covariance = torch.cov(neutral.T, correction=0).repeat(LAYERS, 1, 1)
    v = vectors_from_extraction(x, Recipe(denoise_variance=0, readout="neutral_z"), {"model": "synthetic"})
    z = v.readout(neutral.float(), layer=1)
    assert torch.allclose(z.mean(0), torch.zeros(3), atol=1e-4)
    assert torch.allclose(z.std(0, correction=0), torch.ones(3), atol=1e-4)


def test_grand_mean_readout_ranks_emotions_as_the_centred_projection_does():
    x = synthetic_extraction()
    g = torch.Generator().manual_seed(2)
    neutral = torch.randn(500, WIDTH, generator=g, dtype=torch.float64) * torch.linspace(0.5, 3, WIDTH)
    x.neutral_mean = neutral.mean(0).repeat(LAYERS, 1)
    x.neutral_covariance = torch.cov(neutral.T, correction=0).repeat(LAYERS, 1, 1)
    v = vectors_from_extraction(x, Recipe(denoise_variance=0), {"model": "synthetic"})
    assert v.readout_mode == "grand_mean"
    hidden = torch.randn(50, WIDTH, generator=g).float()
    z = v.readout(hidden, layer=1)
    centred = (hidden - v.grand_mean[1]) @ v.at(1).T
    assert torch.equal(z.argmax(-1), centred.argmax(-1))
    assert torch.allclose(z, centred / v.z_scale[1, 0], atol=1e-4)  # one scale shared by the emotions
    assert torch.allclose(v.z_scale[1], v.z_scale[1, 0].expand(3))
    neutral_z = vectors_from_extraction(x, Recipe(denoise_variance=0, readout="neutral_z"), {"model": "s"})
    assert not torch.equal(neutral_z.readout(hidden, 1).argmax(-1), z.argmax(-1))  # the two read-outs differ


def test_vector_arithmetic_and_names():
    v = vectors_from_extraction(synthetic_extraction(), Recipe(), {"model": "synthetic"})
    diff = v["joy"] - v["calm"]
    assert diff.name == "joy - calm"
    assert torch.allclose(diff.at(1), v.at(1)[0] - v.at(1)[2])
    assert torch.allclose((0.5 * v["fear"]).directions, v["fear"].directions / 2)
    assert torch.allclose((-v["fear"]).directions, -(v["fear"].directions))
    assert torch.allclose((v["joy"] + v["fear"]).unit().directions.norm(dim=-1), torch.ones(LAYERS))
    with pytest.raises(ExplorerError, match="no vector for emotion 'rage'"):
        v["rage"]


def test_save_load_roundtrip_and_bad_files(tmp_path):
    v = vectors_from_extraction(synthetic_extraction(), Recipe(offset=7), {"model": "synthetic", "width": WIDTH})
    path = v.save(tmp_path / "v.safetensors")
    back = EmotionVectors.load(path)
    assert back.emotions == v.emotions and back.metadata["recipe"]["offset"] == 7
    for name in ("directions", "neutral_mean", "neutral_std", "residual_norm", "grand_mean"):
        assert torch.equal(getattr(back, name), getattr(v, name))
    (tmp_path / "junk.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(ExplorerError, match="junk.safetensors: not an emotion-vector file"):
        EmotionVectors.load(tmp_path / "junk.safetensors")
    with pytest.raises(ExplorerError, match="no such vector file"):
        EmotionVectors.load(tmp_path / "missing.safetensors")


def test_cosine_matrix_and_pca_shapes():
    v = vectors_from_extraction(synthetic_extraction(), Recipe(), {"model": "synthetic"})
    cos = v.cosine_matrix(0)
    assert list(cos.index) == EMOTIONS and np.allclose(np.diag(cos), 1.0, atol=1e-5)
    scores, explained = v.pca(0)
    assert scores.shape == (3, 2) and 0 < explained[1] <= explained[0] <= 1
    s1, _ = pca_scores(v.at(0).double().numpy())
    s2, _ = pca_scores(v.at(0).double().numpy())
    assert np.array_equal(s1, s2)


def test_shrinkage_lda_down_weights_what_varies_within_an_emotion():
    # emotion signal on axis 0 (small) and axis 1 (large), but axis 1 also varies a lot between
    # texts of the same emotion (say, register): whitening turns the direction towards axis 0
    g = torch.Generator().manual_seed(3)
    labels = ["a"] * 200 + ["b"] * 200
    sign = torch.tensor([1.0] * 200 + [-1.0] * 200, dtype=torch.float64)
    means = torch.zeros(400, 1, 4, dtype=torch.float64)
    means[:, 0, 0] = 0.5 * sign + 0.1 * torch.randn(400, generator=g, dtype=torch.float64)
    means[:, 0, 1] = 1.0 * sign + 3.0 * torch.randn(400, generator=g, dtype=torch.float64)
    plain, _ = emotion_directions(means, labels, ["a", "b"], [torch.zeros(4, 0, dtype=torch.float64)])
    whitened, grand = lda_directions(means, labels, ["a", "b"], shrinkage=0.3)
    assert abs(plain[0, 0, 1]) > abs(plain[0, 0, 0])  # the plain contrast follows the noisy axis
    assert abs(whitened[0, 0, 0]) > 2 * abs(whitened[0, 0, 1])  # the whitened one the clean axis
    assert torch.allclose(whitened.norm(dim=-1), torch.ones(1, 2, dtype=torch.float64))
    assert torch.allclose(grand, means[:, 0].mean(0, keepdim=True), atol=1e-12)
    # and it is what the recipe builds by default, recorded in the file
    x = synthetic_extraction()
    v = vectors_from_extraction(x, Recipe(), {"model": "synthetic"})
    assert v.metadata["recipe"]["directions"] == "shrinkage_lda"
    expected, _ = lda_directions(x.story_means, x.labels, EMOTIONS, Recipe().shrinkage)
    assert torch.allclose(v.directions, expected.float(), atol=1e-6)


def test_recipe_from_metadata_reads_old_files_as_they_were_built():
    assert Recipe.from_metadata({"recipe": {"offset": 10, "denoise_variance": 0.5}}) == Recipe(
        readout="neutral_z", directions="mean_difference"
    )
    assert Recipe.from_metadata({"recipe": asdict(Recipe(offset=7))}) == Recipe(offset=7)
    with pytest.raises(ExplorerError, match="unknown recipe setting 'colour'"):
        Recipe.from_metadata({"recipe": {"colour": "red"}})
    with pytest.raises(ExplorerError, match="shrinkage"):
        Recipe(shrinkage=0)
