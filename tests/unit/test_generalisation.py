"""Cross-register evaluation on synthetic activations built in code, where the answer is known."""

import numpy as np
import pytest
import torch

from explorer.generalisation import folds, nearest_vector_accuracy, probe_accuracy
from explorer.vectors import Extraction

EMOTIONS = ["a", "b", "c", "d"]
REGISTERS = ["story", "chat", "short"]
WIDTH, LAYERS = 12, 2


def extraction(signal: float, seed: int = 0) -> tuple[Extraction, list[str]]:
    """Texts = emotion direction × signal + a register offset + noise; layer 1 carries the emotion,
    layer 0 only the register."""
    g = torch.Generator().manual_seed(seed)
    emotion_dirs = torch.randn(len(EMOTIONS), WIDTH, generator=g, dtype=torch.float64)
    register_dirs = 3 * torch.randn(len(REGISTERS), WIDTH, generator=g, dtype=torch.float64)
    rows, labels, topics, registers = [], [], [], []
    for r, register in enumerate(REGISTERS):
        for topic in range(10):
            for e, emotion in enumerate(EMOTIONS):
                noise = torch.randn(LAYERS, WIDTH, generator=g, dtype=torch.float64)
                x = noise + register_dirs[r]
                x[1] += signal * emotion_dirs[e]
                rows.append(x)
                labels.append(emotion)
                topics.append(topic)
                registers.append(register)
    means = torch.stack(rows)
    neutral = torch.randn(400, WIDTH, generator=g, dtype=torch.float64)
    return (
        Extraction(
            means,
            labels,
            topics,
            neutral.mean(0).repeat(LAYERS, 1),
            torch.cov(neutral.T, correction=0).repeat(LAYERS, 1, 1),
            torch.ones(LAYERS, dtype=torch.float64),
            400,
        ),
        registers,
    )


def test_leave_one_register_out_holds_out_whole_registers():
    x, registers = extraction(1.0)
    fold_list = folds(x, registers, "register")
    assert [f.name for f in fold_list] == REGISTERS
    for f in fold_list:
        assert set(np.asarray(registers)[f.test]) == {f.name} and f.name not in set(np.asarray(registers)[f.train])
    assert sum(int(f.test.sum()) for f in fold_list) == len(registers)


def test_a_real_signal_is_found_where_it_is_and_not_where_it_is_not():
    x, registers = extraction(2.0)
    table = nearest_vector_accuracy(x, folds(x, registers, "register"), [0, 1], denoise=0.0)
    pick = table[table.recipe == "mean_difference_raw"].set_index(["readout", "layer"])["accuracy"]
    assert pick["text_centred", 1] > 0.9  # layer 1 carries the emotion
    assert pick["text_centred", 0] < 0.5  # layer 0 only the register: near chance (0.25)
    # an unseen register shifts every text by the same offset, which a fixed centring cannot remove
    assert pick["grand_mean", 1] < pick["text_centred", 1]
    shuffled = nearest_vector_accuracy(
        x, folds(x, registers, "register"), [1], labels=list(np.random.default_rng(0).permutation(x.labels)), denoise=0
    )
    assert shuffled.accuracy.max() < 0.5


def test_the_probe_reads_the_signal_and_not_the_noise():
    x, registers = extraction(1.5)
    fold_list = folds(x, registers, "topics")
    accuracy = probe_accuracy(x.story_means, x.labels, fold_list)
    assert accuracy[1] > 0.8 and accuracy[0] < 0.5


def test_the_valence_probe_chooses_its_ridge_without_the_held_out_rating():
    from explorer.validation import RIDGES, loo_predictions, loo_squared_error, probe_r

    rng = np.random.default_rng(0)
    latent = rng.standard_normal((40, 3))  # 40 emotions whose vectors carry a few shared axes
    matrix = latent @ rng.standard_normal((3, 300)) + 0.5 * rng.standard_normal((40, 300))
    target = latent[:, 0] + 0.3 * rng.standard_normal(40)
    readable = probe_r(matrix, target)
    assert readable > 0.8 and readable >= max(probe_r(matrix, target, r) for r in RIDGES) - 0.05
    assert abs(probe_r(matrix, rng.standard_normal(40))) < 0.4  # a rating the vectors do not hold
    # an emotion's own rating never reaches its prediction, not even through the ridge it is given
    moved = target.copy()
    moved[5] += 100.0
    assert loo_predictions(matrix, moved)[5] == loo_predictions(matrix, target)[5]
    assert loo_predictions(matrix, moved)[6] != loo_predictions(matrix, target)[6]
    # the closed-form leave-one-out error that picks the ridge equals refitting without each row
    for ridge in (0.01, 1.0):
        refitted = loo_predictions(matrix, target, ridge)
        assert loo_squared_error(matrix, target, ridge) == pytest.approx(((refitted - target) ** 2).mean(), rel=1e-6)
