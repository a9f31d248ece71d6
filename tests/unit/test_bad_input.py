"""Bad input that must be refused before any model loads: one line on stderr naming the input and
the fix, exit status 2, no traceback, and every file that existed before left byte for byte as it was.

Outside integration tests ``load_model`` fails the test (tests/conftest.py), so each command case
here also proves that the input is refused before the model would load. Cases that need the real
model are in tests/integration/test_bad_input.py.
"""

import json
import os
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import explorer as ex
from explorer import cache, cli
from explorer.corpus import Corpus, Story, story_warnings
from explorer.vectors import SHIPPED_DIR

TINY = {
    "id": "tiny",
    "title": "Tiny",
    "messages": [{"role": "user", "content": "Hi there."}, {"role": "assistant", "content": "Hello!"}],
}
SHIPPED_EPISODE = Path(ex.__file__).parent / "data" / "episodes" / "impossible-code.json"


@pytest.fixture()
def work(tmp_path, monkeypatch):
    """A folder of inputs, some good and some bad, as a user would have them."""
    monkeypatch.chdir(tmp_path)
    files = {
        "existing.csv": b"precious results\n",
        "ep.json": json.dumps(TINY).encode(),
        "a.json": json.dumps(TINY).encode(),
        "b.json": json.dumps({**TINY, "title": "Another"}).encode(),
        "escaped.json": json.dumps({**TINY, "id": "../escaped"}).encode(),
        "list.json": b"[1, 2]",
        "empty-messages.json": json.dumps({**TINY, "messages": []}).encode(),
        "latin1.json": '{"id": "caf\xe9", "messages": []}'.encode("latin-1"),
        "latin1.jsonl": '{"id": "a", "text": "caf\xe9"}\n'.encode("latin-1"),
        "t.jsonl": b'{"id": "a", "text": "A calm afternoon by the lake."}\n',
        "empty.jsonl": b"\n\n",
        # the shipped episode under another id: the same transcript, so no control at all
        "copy.json": json.dumps({**json.loads(SHIPPED_EPISODE.read_text()), "id": "copy", "control": "x"}).encode(),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    os.mkfifo(tmp_path / "pipe")
    return tmp_path


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    code = cli.main(argv)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def assert_one_line_error(code: int, err: str, *expected: str) -> None:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    for part in expected:
        assert part in lines[0], f"{part!r} not in {lines[0]!r}"


CLI_CASES = {
    # destroyed data
    "trace --out existing without --force": (
        ["trace", "ep.json", "--out", "existing.csv"],
        ["existing.csv: already exists", "--force"],
    ),
    "trace --out is the episode": (["trace", "ep.json", "--out", "ep.json", "--force"], ["ep.json: is also an input"]),
    "score --out is the texts": (["score", "t.jsonl", "--out", "t.jsonl", "--force"], ["t.jsonl: is also an input"]),
    "ship-traces two files, one id": (
        ["ship-traces", "--episodes", "a.json,b.json", "--out", "st"],
        ["--episodes", "share the id 'tiny'"],
    ),
    "episode id ../escaped": (["trace", "escaped.json"], ["escaped.json", "field 'id' is '../escaped'", "letters"]),
    "headline --out existing without --force": (["headline", "--out", "existing.csv"], ["already exists"]),
    "ship-traces --out is a file": (["ship-traces", "--episodes", "ep.json", "--out", "existing.csv"], ["is a file"]),
    # wrong or silent results
    "compare with itself as control": (
        ["compare", "impossible-code", "--control", "impossible-code", "--emotion", "desperate"],
        ["impossible-code: the control has the same messages", "--control"],
    ),
    "compare with a renamed copy as control": (
        ["compare", "impossible-code", "--control", "copy.json", "--emotion", "desperate"],
        ["copy.json: the control has the same messages"],
    ),
    "steer --emotion ,": (["steer", "impossible-code", "--emotion", ","], ["--emotion ','", "no emotion named"]),
    "steer --strengths with nan": (["steer", "impossible-code", "--strengths", "-0.1,nan,0.1"], ["nan", "finite"]),
    "steer --strengths with a word": (["steer", "impossible-code", "--strengths", "0,x"], ["--strengths", "numbers"]),
    "steer --strengths too large": (["steer", "impossible-code", "--strengths", "-5,0,5"], ["strength -5", "±0.1"]),
    "steer an episode without a decision": (["steer", "ep.json"], ["ep.json: no 'decision' field"]),
    # tracebacks before
    "non-UTF-8 episode": (["trace", "latin1.json"], ["latin1.json: not UTF-8 text (byte", "save the episode as UTF-8"]),
    "non-UTF-8 JSONL": (["score", "latin1.jsonl"], ["latin1.jsonl: not UTF-8 text", "save it as UTF-8"]),
    "episode that is a JSON list": (["trace", "list.json"], ["list.json: an episode must be an object"]),
    "episode with no messages": (["trace", "empty-messages.json"], ["field 'messages' must be a non-empty list"]),
    "empty JSONL": (["score", "empty.jsonl"], ["empty.jsonl: the file is empty"]),
    "unknown episode id": (["trace", "impossible-cod"], ["no episode file or shipped episode 'impossible-cod'"]),
    "compare --layers 1,x": (
        ["compare", "impossible-code", "--emotion", "desperate", "--layers", "1,x"],
        ["argument --layers: '1,x'", "e.g. 10,15,20", "explorer compare --help"],
    ),
    "compare --random -5": (
        ["compare", "impossible-code", "--emotion", "desperate", "--random", "-5"],
        ["argument --random: '-5'", "whole number"],
    ),
    "compare --random huge": (
        ["compare", "impossible-code", "--emotion", "desperate", "--random", "1000000000"],
        ["argument --random", "1 … 4096"],
    ),
    "compare --layers beyond the zoo model": (
        ["compare", "impossible-code", "--emotion", "desperate", "--layers", "5,40"],
        ["--layers 5,40: layer 40 does not exist in 'smollm2-135m-instruct'", "0 … 29"],
    ),
    "trace --layer all": (["trace", "ep.json", "--layer", "all"], ["argument --layer: 'all'", "one layer number"]),
    "trace --layer -3": (["trace", "ep.json", "--layer", "-3"], ["--layer -3: layer -3 does not exist"]),
    "score --layer x": (["score", "t.jsonl", "--layer", "x"], ["argument --layer: 'x'"]),
    "--vectors that does not exist": (["trace", "ep.json", "--vectors", "nope.safetensors"], ["--vectors nope"]),
    "--out a folder": (["trace", "ep.json", "--out", "."], [".: is a folder"]),
    "--out /dev/full": (["trace", "ep.json", "--out", "/dev/full"], ["/dev/full: not an ordinary file"]),
    "--out a pipe with --force": (["trace", "ep.json", "--out", "pipe", "--force"], ["pipe: not an ordinary file"]),
    "--out under /proc": (["trace", "ep.json", "--out", "/proc/explorer-out.csv"], ["cannot be written in /proc"]),
    "--out in a missing folder": (["trace", "ep.json", "--out", "no/such/x.csv"], ["its folder does not exist"]),
    "no command": ([], ["required: COMMAND"]),
    "unknown option": (["trace", "ep.json", "--colour", "red"], ["unrecognized arguments: --colour red"]),
}


@pytest.mark.parametrize("argv, expected", CLI_CASES.values(), ids=CLI_CASES.keys())
def test_cli_refuses_in_one_line_and_keeps_every_file(work, capsys, argv, expected):
    before = snapshot(work)
    code, out, err = run_cli(argv, capsys)
    assert_one_line_error(code, err, *expected)
    assert out == ""
    assert snapshot(work) == before  # nothing changed, nothing new (no half-written output)


def test_vectors_build_never_writes_into_the_installed_package(work, capsys, monkeypatch):
    shipped = SHIPPED_DIR / "smollm2-135m-instruct.safetensors"
    before = snapshot(SHIPPED_DIR)
    # the default --out is MODEL.safetensors in this folder: here, the shipped file itself
    monkeypatch.chdir(SHIPPED_DIR)
    code, _, err = run_cli(["vectors", "build", "--force", "--stories", str(work / "missing.jsonl")], capsys)
    assert_one_line_error(code, err, "inside the installed package", "--out")
    # naming the shipped file needs --force as well
    code, _, err = run_cli(["vectors", "build", "--out", str(shipped)], capsys)
    assert_one_line_error(code, err, "inside the installed package", "--force")
    assert snapshot(SHIPPED_DIR) == before


def test_help_still_exits_0(capsys):
    assert cli.main(["trace", "--help"]) == 0
    assert "--force" in capsys.readouterr().out


# --- the public API without a model ------------------------------------------------------


def tiny_vectors(emotions=("calm", "desperate", "afraid"), layers=3, width=8) -> ex.EmotionVectors:
    directions = torch.nn.functional.normalize(torch.randn(layers, len(emotions), width), dim=-1)
    return ex.EmotionVectors(
        directions=directions,
        emotions=list(emotions),
        neutral_mean=torch.zeros(layers, len(emotions)),
        neutral_std=torch.ones(layers, len(emotions)),
        residual_norm=torch.ones(layers),
        grand_mean=torch.zeros(layers, width),
        metadata={"model": "tiny"},
    )


@pytest.mark.parametrize(
    "call, expected",
    [
        (lambda v: v["calm"] * "x", "cannot multiply 'calm' by str 'x'"),
        (lambda v: "x" * v["calm"], "cannot multiply 'calm' by str"),
        (lambda v: v["calm"] * float("nan"), "by nan; use a finite number"),
        (lambda v: v["calm"] / 0, "cannot divide 'calm' by zero"),
        (lambda v: v["desparate"], "no vector for emotion 'desparate'; did you mean 'desperate'?"),
        (lambda v: v["Calm "], "did you mean 'calm'?"),
    ],
    ids=["times a word", "word times", "times nan", "divided by zero", "misspelt", "case and space"],
)
def test_vector_arithmetic_and_names(call, expected):
    with pytest.raises(ex.ExplorerError) as err:
        call(tiny_vectors())
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_vector_arithmetic_that_is_legal_still_works():
    v = tiny_vectors()
    assert torch.allclose((v["calm"] * 2).directions, 2 * v["calm"].directions)
    assert torch.allclose((v["calm"] / 4).directions, v["calm"].directions / 4)


def _broken_files(tmp_path: Path) -> dict[str, Path]:
    good = tiny_vectors().save(tmp_path / "good.safetensors")
    tensors = load_file(str(good))
    with safe_open(str(good), "pt") as handle:
        meta = json.loads(handle.metadata()["explorer"])

    def write(name, tensors, meta):
        path = tmp_path / f"{name}.safetensors"
        save_file(tensors, str(path), metadata={"explorer": json.dumps(meta)})
        return path

    nan = dict(tensors, directions=tensors["directions"].clone())
    nan["directions"][1, 0, 2] = float("nan")
    return {
        "names as a string": write("string", tensors, {**meta, "emotions": "calm"}),
        "fewer names than tensors": write("fewer", tensors, {**meta, "emotions": meta["emotions"][:2]}),
        "NaN direction": write("nan", nan, meta),
        "zero neutral std": write("zero", dict(tensors, neutral_std=torch.zeros_like(tensors["neutral_std"])), meta),
        "missing neutral_std": write("missing", {k: t for k, t in tensors.items() if k != "neutral_std"}, meta),
        "repeated names": write("repeated", tensors, {**meta, "emotions": ["calm", "calm", "afraid"]}),
    }


@pytest.mark.parametrize(
    "case, expected",
    [
        ("names as a string", "metadata field 'emotions' (a list of names) is missing"),
        ("fewer names than tensors", "2 emotion names for 3 directions"),
        ("NaN direction", "'directions' holds NaN"),
        ("zero neutral std", "'neutral_std' has zeros"),
        ("missing neutral_std", "tensor 'neutral_std' is missing"),
        ("repeated names", "distinct non-empty names"),
    ],
)
def test_vector_files_whose_metadata_and_tensors_disagree(tmp_path, case, expected):
    path = _broken_files(tmp_path)[case]
    with pytest.raises(ex.ExplorerError) as err:
        ex.EmotionVectors.load(path)
    message = str(err.value)
    assert message.startswith(str(path)) and expected in message and "\n" not in message


@pytest.mark.parametrize(
    "value, expected",
    [(123, "load_episode: 123 is not a file path or an episode id"), ("", "is not a file path"), (None, "None")],
)
def test_load_episode_of_a_non_name(value, expected):
    with pytest.raises(ex.ExplorerError, match=expected):
        ex.load_episode(value)


# --- the cache ---------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["a file", "inside a file", "under /proc"])
def test_cache_that_cannot_be_used_is_one_line(tmp_path, monkeypatch, where):
    (tmp_path / "f").write_text("not a folder")
    value = {"a file": tmp_path / "f", "inside a file": tmp_path / "f" / "c", "under /proc": "/proc/explorer-cache"}
    monkeypatch.setenv(cache.CACHE_ENV, str(value[where]))
    with pytest.raises(ex.ExplorerError) as err:
        cache.cache_root()
    message = str(err.value)
    assert message.startswith(f"$EXPLORER_CACHE={value[where]}: cannot be used as the cache")
    assert "point $EXPLORER_CACHE at a folder you can write in" in message
    assert (tmp_path / "f").read_text() == "not a folder"


def test_stale_temporaries_of_killed_writes_are_removed_on_next_use(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    models = root / "models"
    stale = cache.temporary_dir_beside(models / "smollm2-135m-instruct-b179c9523d0e6a0f")  # a killed rebuild
    (stale / "gguf").mkdir()
    (stale / "gguf" / "m.gguf").write_bytes(b"half")
    fresh = cache.temporary_dir_beside(models / "gemma-3-270m-a5fd3b62230aa5ec")  # a rebuild still running
    (root / "traces").mkdir()
    stale_file = root / "traces" / ".abc.npz.x1y2.tmp"
    stale_file.write_bytes(b"half a trace")
    kept = [models / "finished", root / "traces" / "abc.npz", root / "traces" / "notes.tmp"]
    kept[0].mkdir()
    kept[1].write_bytes(b"a trace")
    kept[2].write_bytes(b"not ours")
    old = time.time() - 2 * cache.STALE_AFTER_S
    for path in [*stale.rglob("*"), stale, stale_file, *kept]:
        os.utime(path, (old, old))
    monkeypatch.setenv(cache.CACHE_ENV, str(root))
    assert cache.cache_root() == root
    assert not stale.exists() and not stale_file.exists()
    assert fresh.is_dir() and all(p.exists() for p in kept)


# --- stories -----------------------------------------------------------------------------


def test_story_warnings_name_thin_and_misspelt_emotions():
    corpus = Corpus(
        stories=tuple(Story(e, f"{e} story {i}", i) for e in ("calm", "desperate") for i in range(6)),
        neutral=("A plain day.",),
        neutral_topics=(0,),
    )
    assert story_warnings(corpus, [Story("calm", "one more")]) == []
    lines = story_warnings(corpus, [Story("serene", "Only one story.")])
    assert len(lines) == 1 and "'serene' (1)" in lines[0] and "fewer than 5 stories" in lines[0]
    lines = story_warnings(corpus, [Story("desparate", "x")] * 6)
    assert lines == ["your emotion 'desparate' is new but close to 'desperate'; check the spelling"]


# --- vectors -----------------------------------------------------------------------------


@pytest.mark.parametrize("given", ["qwen2.5-coder-0.5b-instruct", None, 3])
def test_load_vectors_wants_the_loaded_model_not_its_name(given):
    with pytest.raises(ex.ExplorerError) as error:
        ex.load_vectors(given)
    message = str(error.value)
    assert message.startswith("load_vectors: model is a ") and "ex.load_vectors(ex.load_model(" in message
    assert "\n" not in message
