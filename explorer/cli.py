"""The `explorer` command line (also `python -m explorer`).

Every command has ``--help``; bad input ends with a one-line ``error: ...`` and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

from . import comparison, decisions, models
from . import vectors as vectors_module
from .errors import ExplorerError


def _models(args: argparse.Namespace) -> int:
    if args.install:
        models.install(args.install)
    for name in args.prepare:
        print(f"{name}: cached at {models.prepare(name)}", file=sys.stderr)
    rows = models.zoo_table()
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    columns = ["name", "source", "installed", "layers", "width", "default_layer", "chat", "notes"]
    cells = [[str(r[c]).lower() if isinstance(r[c], bool) else str(r[c]) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    for row in [columns, *cells]:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())
    return 0


def _vectors_build(args: argparse.Namespace) -> int:
    from . import vectors as vec
    from .corpus import load_corpus, read_stories

    out = Path(args.out) if args.out else Path(f"{args.model.replace('/', '--')}.safetensors")
    package = Path(vec.__file__).parent.resolve()
    if out.resolve().is_relative_to(package) and not (args.out and args.force):
        raise ExplorerError(
            f"{out}: inside the installed package ({package}); write elsewhere with --out, "
            "or give --out and --force to replace a shipped file"
        )
    check_output(str(out), args.force, (args.stories,))
    stories = read_stories(args.stories) if args.stories else []
    model = _load(args)
    recipe = vec.Recipe(
        offset=args.offset, denoise_variance=args.denoise, directions=args.directions, readout=args.readout
    )
    built = vec.build_vectors(model, stories, recipe, topics=args.topics, corpus=load_corpus(args.corpus))
    built.save(out)
    print(f"{len(built)} emotions x {built.n_layers} layers (width {built.width}) -> {out}", file=sys.stderr)
    return 0


def _vectors_report(args: argparse.Namespace) -> int:
    from . import validation
    from . import vectors as vec

    model = _load(args)
    vectors = vec.load_vectors(model, args.vectors)
    recipe = vec.Recipe.from_metadata(vectors.metadata)
    corpus = load_corpus_for(vectors)
    extraction = vec.extract(model, corpus, recipe)
    probe_layers = None if args.probe_layers is None else model.resolve_layers(args.probe_layers)
    result = validation.report(model, vectors, extraction, recipe, corpus=corpus, probe_layers=probe_layers)
    text = json.dumps(result, indent=1, default=float)
    if args.out:
        _write_text(args.out, text, force=args.force)
    if args.json:
        print(text)
    else:
        print(validation.format_report(result))
    return 0


def load_corpus_for(vectors) -> object:
    from .corpus import V1_CORPUS_SHA256, load_corpus

    corpus = load_corpus("v1" if vectors.metadata.get("corpus_sha256") == V1_CORPUS_SHA256 else "v2")
    if vectors.metadata.get("corpus_sha256") not in (None, corpus.fingerprint()):
        raise ExplorerError(
            "these vectors were built from a different corpus than the shipped one; "
            "report on vectors built with `explorer vectors build` from the shipped corpus"
        )
    return corpus


def _score(args: argparse.Namespace) -> int:
    from . import vectors as vec
    from .corpus import read_texts

    check_output(args.out, args.force, (args.texts,))
    records = read_texts(args.texts)
    ids = [r["id"] for r in records]
    if len(set(map(str, ids))) != len(ids):
        raise ExplorerError(
            f"{args.texts}: ids repeat (e.g. {next(i for i in ids if ids.count(i) > 1)!r}); give each text its own id"
        )
    model = _load(args)
    vectors = vec.load_vectors(model, args.vectors)
    table = vec.score_texts(model, vectors, [r["text"] for r in records], layer=args.layer, centre=args.centre)
    table.insert(0, "id", [r["id"] for r in records])
    _write_csv(table, args.out, args.force)
    return 0


def _trace(args: argparse.Namespace) -> int:
    from .episodes import load_episode
    from .tracing import trace
    from .vectors import load_vectors

    check_output(args.out, args.force, (args.episode,))
    check_output(args.parquet, args.force, (args.episode, args.out))
    episode = load_episode(args.episode)
    model = _load(args)
    (layer,) = model.resolve_layers(args.layer)
    result = trace(model, episode, load_vectors(model, args.vectors), layers="all" if args.parquet else [layer])
    if args.parquet:
        result.to_parquet(args.parquet)
    _write_csv(result.readouts(layer), args.out, args.force)
    return 0


def _compare(args: argparse.Namespace) -> int:
    from .comparison import compare
    from .episodes import load_control, load_episode
    from .vectors import load_vectors

    episode = load_episode(args.episode)
    control = load_episode(args.control) if args.control else load_control(episode)
    if control.messages == episode.messages:
        raise ExplorerError(
            f"{args.control or episode.control}: the control has the same messages as the episode; give a matched "
            "control (same assistant turns, no pressure) with --control"
        )
    model = _load(args)
    result = compare(
        model, episode, load_vectors(model, args.vectors), args.emotion, control, args.layers, args.random,
        span=args.span,
    )  # fmt: skip
    print(result.to_json())
    return 0


def _headline(args: argparse.Namespace) -> int:
    from .headline import headline, save, to_markdown
    from .vectors import load_vectors

    check_output(args.out, args.force)
    model = _load(args)
    vectors = load_vectors(model, args.vectors)
    rows = headline(model, vectors)
    if args.out:
        print(f"rows -> {save(rows, model, vectors, args.out)}", file=sys.stderr)
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print(to_markdown(rows, model.default_layer))
    return 0


def _controls(args: argparse.Namespace) -> int:
    from .controls import control_results
    from .vectors import load_vectors

    model = _load(args)
    results = control_results(model, load_vectors(model, args.vectors), layers=args.layers or "all")
    if args.out:
        print(f"results -> {results.save(args.out)}", file=sys.stderr)
    print(json.dumps(results.to_dict(), indent=1) if args.json else results.verdict())
    return 0


def _steer(args: argparse.Namespace) -> int:
    from .decisions import dose_response
    from .episodes import load_episode
    from .steering import check_strength
    from .vectors import load_vectors

    strengths = _floats(args.strengths, "--strengths")
    for strength in strengths:
        check_strength(strength)
    emotions = [e.strip() for e in args.emotion.split(",") if e.strip()]
    if not emotions:
        raise ExplorerError(f"--emotion {args.emotion!r}: no emotion named; give one or more, e.g. desperate,calm")
    check_output(args.out, args.force, (args.episode,))
    episode = load_episode(args.episode)
    episode.require_decision()
    model = _load(args)
    vectors = load_vectors(model, args.vectors)
    layers = args.layers
    for emotion in emotions:
        vectors.index(emotion)  # an unknown name fails here, before any model work
    progress = None
    if sys.stderr.isatty():

        def progress(done: int, total: int) -> None:
            print(f"\r{done}/{total} steered decisions", end="" if done < total else "\n", file=sys.stderr)

    result = dose_response(
        model, episode, vectors, emotions, strengths, layers, random=args.random, null=not args.no_null,
        progress=progress,
    )  # fmt: skip
    if args.out:
        from .decisions import save_dose_response

        print(f"-> {save_dose_response(result, episode, vectors, args.out)}", file=sys.stderr)
    print(result.to_json(table=args.table))
    return 0


def _tone(args: argparse.Namespace) -> int:
    from .tone import load_prompts, tone_response
    from .vectors import load_vectors

    check_output(args.out, args.force, (args.prompts,))
    strengths = _floats(args.strengths, "--strengths")
    prompts = load_prompts(args.prompts)  # a bad file fails here, before any model work
    emotions = [e.strip() for e in args.emotion.split(",") if e.strip()]
    model = _load(args)
    vectors = load_vectors(model, args.vectors)
    for emotion in emotions:
        vectors.index(emotion)
    progress = None
    if sys.stderr.isatty():

        def progress(done: int, total: int) -> None:
            print(f"\r{done}/{total} prompts", end="" if done < total else "\n", file=sys.stderr)

    result = tone_response(
        model, vectors, emotions, strengths, args.layers, prompts, n_random=args.random, seed=args.seed,
        temperature=args.temperature, max_new_tokens=args.max_new_tokens, judge=args.judge, progress=progress,
    )  # fmt: skip
    if args.out:
        _write_text(args.out, result.to_json(table=True), force=args.force)
        print(result.verdict())
    else:
        print(result.to_json(table=args.table))
    return 0


def _floats(text: str, option: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ExplorerError(f"{option} {text!r}: give comma-separated numbers, e.g. -0.1,0,0.1") from None


def _ship_traces(args: argparse.Namespace) -> int:
    from .episodes import load_episode, shipped_episodes
    from .tracing import TRACES_DIR, trace
    from .vectors import load_vectors

    names = [n.strip() for n in args.episodes.split(",") if n.strip()] if args.episodes else shipped_episodes()
    if not names:
        raise ExplorerError(f"--episodes {args.episodes!r}: no episode named; give ids or files, comma-separated")
    episodes = [load_episode(name) for name in names]
    ids = [e.id for e in episodes]
    if len(set(ids)) != len(ids):
        raise ExplorerError(
            f"--episodes: two episodes share the id '{next(i for i in ids if ids.count(i) > 1)}'; ids name the files"
        )
    if args.out and Path(args.out).exists() and not Path(args.out).is_dir():
        raise ExplorerError(f"--out {args.out}: is a file; ship-traces writes one file per episode into a folder")
    model = _load(args)
    vectors = load_vectors(model, args.vectors)
    layers = model.resolve_layers(args.layers)
    folder = Path(args.out) if args.out else TRACES_DIR / model.name
    folder.mkdir(parents=True, exist_ok=True)
    for episode in episodes:
        path = trace(model, episode, vectors, layers=layers).save(folder / f"{episode.id}.npz")
        print(f"{episode.id}: {path} ({path.stat().st_size / 1e6:.2f} MB)", file=sys.stderr)
    return 0


def _corpus(args: argparse.Namespace) -> int:
    from .corpus import summary

    print(summary())
    return 0


def _join_negative_lists(argv: list[str]) -> list[str]:
    """``--strengths -0.1,0,0.1`` → ``--strengths=-0.1,0,0.1``: argparse would read the value as an option."""
    out, i = [], 0
    while i < len(argv):
        if argv[i] == "--strengths" and i + 1 < len(argv):
            out.append(f"--strengths={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def layer_arg(value: str) -> int:
    """argparse type for --layer: one whole number (checked against the model by ``resolve_layers``)."""
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r}: give one layer number, e.g. 20") from None


def layers_arg(value: str) -> str:
    """argparse type for --layers: 'all' or comma-separated whole numbers, checked before any
    model loads (the range is checked against the model by ``Model.resolve_layers``)."""
    parts = [p.strip() for p in value.split(",")]
    if value.strip() != "all" and not (parts and all(p.lstrip("-").isdigit() for p in parts)):
        raise argparse.ArgumentTypeError(f"{value!r}: give comma-separated layer numbers, e.g. 10,15,20, or 'all'")
    return value


MAX_DIRECTIONS = comparison.MAX_RANDOM  # --random: more would take hours (steer) or too much memory (compare)


def count_arg(value: str) -> int:
    """argparse type for counts of directions: a whole number from 1 to ``MAX_DIRECTIONS``."""
    try:
        number = int(value)
    except ValueError:
        number = 0
    if not 1 <= number <= MAX_DIRECTIONS:
        raise argparse.ArgumentTypeError(f"{value!r}: give a whole number of directions 1 … {MAX_DIRECTIONS}, e.g. 32")
    return number


def output_path(value: str) -> str:
    """argparse type for --out options: refuse a missing folder before any work is done."""
    if not Path(value).expanduser().resolve().parent.is_dir():
        raise argparse.ArgumentTypeError(f"{value}: its folder does not exist; create it or choose another path")
    return value


def check_output(out: str | None, force: bool, inputs: tuple = ()) -> None:
    """Refuse, before any work, an output that is one of the inputs, a folder or anything but an
    ordinary file (a device such as /dev/full, a pipe), one that exists without --force, or one
    in a folder where no file can be made (read-only, /proc)."""
    if not out:
        return
    path = Path(out).expanduser().resolve()
    for given in inputs:
        if given and Path(str(given)).expanduser().exists() and Path(str(given)).expanduser().resolve() == path:
            raise ExplorerError(f"{out}: is also an input; write the output to another file")
    if path.is_dir():
        raise ExplorerError(f"{out}: is a folder; give a file name")
    if path.exists() and not path.is_file():
        raise ExplorerError(f"{out}: not an ordinary file (a device or pipe); write to a file, or leave out --out")
    if path.exists() and not force:
        raise ExplorerError(f"{out}: already exists; choose another file or pass --force to replace it")
    try:  # the output is written beside itself and renamed into place: that folder must take a new file
        handle, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(handle)
        os.unlink(probe)
    except OSError as exc:
        raise ExplorerError(
            f"{out}: cannot be written in {path.parent} ({exc.strerror or type(exc).__name__}); choose another folder"
        ) from None


def _write_text(out: str, text: str, force: bool) -> None:
    from .cache import write_file_atomic

    check_output(out, force)
    try:
        write_file_atomic(Path(out), text.encode())
    except OSError as exc:
        raise ExplorerError(
            f"{out}: cannot be written ({exc.strerror or type(exc).__name__}); nothing was changed"
        ) from None
    print(f"-> {out}", file=sys.stderr)


def _write_csv(table, out: str | None, force: bool = False) -> None:
    """Standard output, or ``out`` written atomically (a temporary file renamed into place, so an
    existing file is never left half-written)."""
    if out:
        _write_text(out, table.to_csv(index=False, float_format="%.5g"), force)
    else:
        table.to_csv(sys.stdout, index=False, float_format="%.5g")


def _load(args: argparse.Namespace):
    """The model, after what can be checked without it: --vectors exists, and layers exist in a zoo model."""
    given = getattr(args, "vectors", None)
    if given and not Path(given).expanduser().is_file():
        raise ExplorerError(f"--vectors {given}: no such file; give a file from `explorer vectors build`")
    entry = models.ZOO.get(args.model)
    for option in ("layer", "layers", "probe_layers"):
        value = getattr(args, option, None)
        if entry is None or value is None or str(value).strip() == "all":
            continue
        for layer in (int(v) for v in str(value).split(",") if v.strip()):
            if not 0 <= layer < entry.n_layers:
                flag = "--" + option.replace("_", "-")
                raise ExplorerError(
                    f"{flag} {value}: layer {layer} does not exist in '{args.model}'; choose 0 … {entry.n_layers - 1}"
                )
    return models.load_model(args.model, remote=getattr(args, "remote", False))


def _add_model(p: argparse.ArgumentParser, vectors: bool = True) -> None:
    """--model and --remote, and (for commands that read out) --vectors."""
    p.add_argument(
        "--model",
        "-m",
        default=models.DEFAULT_MODEL,
        help=f"zoo name, Hugging Face id or local directory (default: {models.DEFAULT_MODEL})",
    )
    p.add_argument(
        "--remote",
        action="store_true",
        help="run the model on NDIF (a Hugging Face id NDIF hosts; key from NDIF_API_KEY or a hidden prompt)",
    )
    if vectors:
        p.add_argument("--vectors", help="a vector file (default: the model's shipped or cached vectors)")


class _Parser(argparse.ArgumentParser):
    """argparse with its errors as one line (``error: ...`` naming the option), exit status 2."""

    def error(self, message: str):
        self.exit(2, f"error: {' '.join(message.split())} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="explorer",
        description="Emotion Vector Explorer: emotion read-outs inside language models.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    zoo = commands.add_parser(
        "models",
        help="list the model zoo: name, source package, installed or not, layers, width",
        description="List the packaged models. Any Hugging Face id or local directory works too.",
    )
    zoo.add_argument("--json", action="store_true", help="print the table as JSON")
    zoo.add_argument(
        "--install",
        nargs="+",
        default=[],
        metavar="NAME",
        help="pip-install these zoo models' packages (with --no-deps) first",
    )
    zoo.add_argument(
        "--prepare",
        nargs="+",
        default=[],
        metavar="NAME",
        help="de-quantize these zoo models into the cache now, so later loads take seconds",
    )
    zoo.set_defaults(run=_models)

    vectors = commands.add_parser("vectors", help="build and validate emotion vectors")
    vector_commands = vectors.add_subparsers(dest="vectors_command", required=True, metavar="ACTION")
    build = vector_commands.add_parser(
        "build",
        help="build emotion vectors from the text corpus (batched forward passes, every layer)",
        description="Build emotion vectors from the shipped corpus (seven registers) plus your texts, by the "
        "recipe chosen on held-out registers (shrinkage LDA, grand-mean read-out) or the paper's (--directions).",
    )
    _add_model(build, vectors=False)
    build.add_argument(
        "--out", type=output_path, help="output .safetensors file (default: MODEL.safetensors in this folder)"
    )
    build.add_argument("--force", action="store_true", help="replace --out if it exists")
    build.add_argument("--stories", help='JSONL file of your own stories, one {"emotion": ..., "text": ...} per line')
    recipe = vectors_module.Recipe()
    build.add_argument(
        "--offset",
        type=int,
        default=recipe.offset,
        help=f"tokens skipped at each story's start (default {recipe.offset})",
    )
    build.add_argument(
        "--denoise",
        type=float,
        default=recipe.denoise_variance,
        help="fraction of neutral variance whose top components are projected out; 0 = off "
        f"(default {recipe.denoise_variance})",
    )
    build.add_argument(
        "--directions",
        choices=("shrinkage_lda", "mean_difference"),
        default=recipe.directions,
        help="how directions are made from the texts: shrinkage-whitened contrasts, or the paper's "
        f"difference of means with neutral denoising (default {recipe.directions}; docs/VECTORS.md)",
    )
    build.add_argument(
        "--readout",
        choices=("grand_mean", "neutral_z"),
        default=recipe.readout,
        help=f"how z-scores are calibrated (default {recipe.readout}; docs/VECTORS.md)",
    )
    build.add_argument(
        "--corpus",
        choices=("v2", "v1"),
        default="v2",
        help="v2: all seven registers (default); v1: the first corpus of 800 stories "
        "(what vector files before corpus v2 were built from)",
    )
    build.add_argument(
        "--topics",
        type=int,
        help="use only the corpus's first N topics (40 in v2, 20 in v1; a cheaper build for big models)",
    )
    build.set_defaults(run=_vectors_build)
    report = vector_commands.add_parser(
        "report",
        help="validate vectors: held-out accuracy, valence/arousal, escalation, random floors",
    )
    _add_model(report)
    report.add_argument("--json", action="store_true", help="print the full report as JSON")
    report.add_argument("--out", type=output_path, help="also write the full JSON report to this file")
    report.add_argument("--force", action="store_true", help="replace --out if it exists")
    report.add_argument(
        "--probe-layers",
        type=layers_arg,
        help="layers at which to fit the logistic probe (comma-separated or 'all'; default all: the slow part)",
    )
    report.set_defaults(run=_vectors_report)

    score = commands.add_parser(
        "score",
        help="mean emotion read-outs of your own texts (JSONL of {id, text})",
        description="One CSV row per text, one column per emotion: the text's mean z-scored read-out.",
    )
    score.add_argument("texts", help='JSONL file, one {"id": ..., "text": ...} per line')
    _add_model(score)
    score.add_argument("--layer", type=layer_arg, help="read-out layer (default: the model's default layer)")
    score.add_argument(
        "--centre",
        choices=("vectors", "texts"),
        default="vectors",
        help="'texts': score each text against the file's other texts (removes what they all share, e.g. "
        "their register; needs texts of several emotions); default: the vectors' own calibration",
    )
    score.add_argument("--out", type=output_path, help="CSV file to write (default: standard output)")
    score.add_argument("--force", action="store_true", help="replace --out if it exists")
    score.set_defaults(run=_score)

    tracer = commands.add_parser(
        "trace",
        help="per-token read-outs of an episode on every emotion (CSV, one row per token)",
        description="Columns: token_index,message_index,role,attempt,token,<one column per emotion> "
        "(z-scored read-outs at one layer).",
    )
    tracer.add_argument("episode", help="an episode file (JSON/YAML) or the id of a shipped episode")
    _add_model(tracer)
    tracer.add_argument("--layer", type=layer_arg, help="read-out layer (default: the model's default layer)")
    tracer.add_argument("--out", type=output_path, help="CSV file to write (default: standard output)")
    tracer.add_argument(
        "--parquet", type=output_path, help="also write every layer in long format to this Parquet file"
    )
    tracer.add_argument("--force", action="store_true", help="replace --out / --parquet if they exist")
    tracer.set_defaults(run=_trace)

    comparer = commands.add_parser(
        "compare",
        help="does an emotion rise across failed attempts more than in a matched control? (JSON)",
        description="Per-attempt means, trends, the episode-minus-control trend with a permutation p-value, "
        "random-direction and shuffled-label baselines, specificity. Fields: docs/STATISTICS.md.",
    )
    comparer.add_argument("episode", help="an episode file or the id of a shipped episode")
    comparer.add_argument("--control", help="the matched control (default: the episode's 'control')")
    comparer.add_argument("--emotion", "-e", required=True, help="emotion to test, e.g. desperate")
    _add_model(comparer)
    comparer.add_argument(
        "--layers",
        type=layers_arg,
        help="comma-separated layers or 'all' (Holm-corrected); default: the model's default layer",
    )
    comparer.add_argument(
        "--random",
        type=count_arg,
        default=comparison.N_RANDOM,
        help=f"random directions in the baseline (default {comparison.N_RANDOM})",
    )
    comparer.add_argument(
        "--span",
        choices=sorted(comparison.SPANS),
        default="assistant",
        help="tokens tested: the assistant's (default; identical in a matched set) or the feedback turns",
    )
    comparer.set_defaults(run=_compare)

    head = commands.add_parser(
        "headline",
        help="desperate/calm/afraid across failed attempts: failure vs pressure, all layers",
        description="Runs `compare` for the three matched contrasts of the impossible-code set at every layer.",
    )
    _add_model(head)
    head.add_argument("--json", action="store_true", help="every row as JSON instead of the Markdown summary")
    head.add_argument(
        "--out",
        type=output_path,
        help="also write every row as JSON to this file (explorer/data/headline/MODEL.json ships it with the package)",
    )
    head.add_argument("--force", action="store_true", help="replace --out if it exists")
    head.set_defaults(run=_headline)

    controller = commands.add_parser(
        "controls",
        help="controls of the read-out: explicit vs implicit context, numeric escalation vs a harmless twin",
        description="The lost-thesis set (explicitly desperate / pressured / calm feedback, identical assistant "
        "turns) on feedback and assistant tokens at every layer, and the escalation templates against their "
        "harmless twins at the rule layer. Fields: docs/CONTROLS.md.",
    )
    _add_model(controller)
    controller.add_argument("--json", action="store_true", help="every table as JSON instead of the verdicts")
    controller.add_argument(
        "--layers", type=layers_arg, help="layers the context control scans (default: all; must hold the rule layer)"
    )
    controller.add_argument(
        "--out",
        type=output_path,
        help="also write the results as JSON to this file (explorer/data/controls/readout-MODEL.json ships them)",
    )
    controller.set_defaults(run=_controls)

    steerer = commands.add_parser(
        "steer",
        help="dose-response: steer an emotion and read the unsafe option's log-odds at the episode's decision (JSON)",
        description="Sweeps steering strength (a fraction of the layer's mean residual norm) for each emotion and for "
        "random and shuffled-label directions; prints slopes, trend tests, control p-values and the random band. "
        "Fields: docs/STEERING.md.",
    )
    steerer.add_argument("episode", help="an episode with a 'decision' field (e.g. impossible-code, alex-replacement)")
    steerer.add_argument("--emotion", "-e", default="desperate,calm", help="emotion(s), comma-separated")
    strengths = ",".join(f"{s:g}" for s in decisions.CLI_STRENGTHS)
    steerer.add_argument("--strengths", default=strengths, help=f"comma-separated strengths (default {strengths})")
    steerer.add_argument(
        "--layers", type=layers_arg, help="comma-separated layers or 'all' (default: the model's default layer)"
    )
    steerer.add_argument(
        "--random",
        type=count_arg,
        default=decisions.N_RANDOM,
        help=f"random directions in the control (default {decisions.N_RANDOM})",
    )
    steerer.add_argument("--no-null", action="store_true", help="skip the shuffled-label directions")
    steerer.add_argument("--table", action="store_true", help="include every (direction, strength) log-odds")
    steerer.add_argument(
        "--out",
        type=output_path,
        help="also write the whole result with its provenance as JSON (ex.load_dose_response reads it; "
        "explorer/data/dose_response/MODEL/EPISODE.json ships it with the package)",
    )
    steerer.add_argument("--force", action="store_true", help="replace an existing --out file")
    _add_model(steerer)
    steerer.set_defaults(run=_steer)

    from . import tone

    toner = commands.add_parser(
        "tone",
        help="positive control: steer happy/sad while the model continues neutral prompts; does the text's "
        "valence (VADER) move beyond random directions? (JSON)",
        description="Samples continuations of neutral prompts unsteered, steered with each emotion and with random "
        "directions of the same norm (same prompts and seeds), scores them with VADER (and optionally a second "
        "model), guards fluency, and prints slopes, permutation p, the random band and a verdict. "
        "Fields: docs/STEERING.md.",
    )
    toner.add_argument("--emotion", "-e", default=",".join(tone.EMOTIONS), help="emotion(s), comma-separated")
    tone_strengths = ",".join(f"{s:g}" for s in tone.STRENGTHS)
    toner.add_argument(
        "--strengths", default=tone_strengths, help=f"comma-separated strengths (default {tone_strengths})"
    )
    tone_layers = ",".join(map(str, tone.LAYERS))
    toner.add_argument("--layers", type=layers_arg, default=tone_layers, help=f"steered layers (default {tone_layers})")
    toner.add_argument(
        "--random",
        type=count_arg,
        default=tone.N_RANDOM,
        help=f"random directions of the same norm (default {tone.N_RANDOM})",
    )
    toner.add_argument("--prompts", help='a JSON file {"prompts": [...]} (default: the shipped neutral prompts)')
    toner.add_argument("--seed", type=int, default=0, help="prompt i is sampled with seed SEED+i (default 0)")
    toner.add_argument(
        "--temperature", type=float, default=tone.TEMPERATURE, help=f"sampling temperature (default {tone.TEMPERATURE})"
    )
    toner.add_argument(
        "--max-new-tokens",
        type=int,
        default=tone.MAX_NEW_TOKENS,
        help=f"tokens per continuation (default {tone.MAX_NEW_TOKENS})",
    )
    toner.add_argument(
        "--judge", help="also ask this zoo model (e.g. qwen2.5-coder-0.5b-instruct) happy-or-sad of every text (slow)"
    )
    toner.add_argument("--out", type=output_path, help="write the full result (every continuation) as JSON here")
    toner.add_argument("--force", action="store_true", help="replace --out if it exists")
    toner.add_argument("--table", action="store_true", help="print every continuation too (without --out)")
    _add_model(toner)
    toner.set_defaults(run=_tone)

    shipper = commands.add_parser(
        "ship-traces",
        help="trace episodes and save them as files that open without the model (explorer/data/traces/MODEL/)",
    )
    shipper.add_argument("--episodes", help="comma-separated episode ids or files (default: every shipped episode)")
    shipper.add_argument(
        "--layers", type=layers_arg, help="comma-separated layers (default: the model's default layer)"
    )
    shipper.add_argument("--out", help="folder (default: the package's data/traces/MODEL)")
    _add_model(shipper)
    shipper.set_defaults(run=_ship_traces)

    corpus = commands.add_parser("corpus", help="counts of the shipped story corpus (for its datasheet)")
    corpus.set_defaults(run=_corpus)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(_join_negative_lists(sys.argv[1:] if argv is None else list(argv)))
    except SystemExit as done:  # --help, or a one-line usage error (see _Parser.error)
        return done.code if isinstance(done.code, int) else 2
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        return args.run(args)
    except ExplorerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # anything else: one line, never a traceback (unless --verbose)
        if args.verbose:
            raise
        reason = " ".join(str(exc).split())[:300] or "no message"
        print(f"error: {type(exc).__name__}: {reason} (rerun with -v for details)", file=sys.stderr)
        return 2
