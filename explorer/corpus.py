"""The text corpus the emotion vectors are built from, and users' own stories.

The shipped corpus lives in ``explorer/data/corpus/`` and is written in several *registers* (kinds of
text): ``texts/<register>.jsonl`` holds one emotional text per line (emotion, topic, person, text),
``neutral/<register>.jsonl`` emotionally flat texts in the same registers (for denoising and
calibration), ``topics.json`` the settings texts are written in, ``banned.json`` each emotion's
banned words (its name and synonyms, which its texts never contain). ``DATASHEET.md`` says how it
was written and what it holds.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from .errors import ExplorerError

CORPUS_DIR = Path(__file__).parent / "data" / "corpus"


# The first corpus (v1: the 800 one-paragraph stories of register "story" and 140 Person/AI
# dialogues), which vector files built before corpus v2 name in their metadata.
V1_CORPUS_SHA256 = "c3ebf7e3b7b559424cf2cc780f028549adb67f39e724a0fb4bf314705c467ab6"

REGISTERS = ("story", "narrative", "diary", "assistant", "dialogue", "workchat", "short")


@dataclass(frozen=True)
class Story:
    """One text labelled with the emotion its character (or writer) feels."""

    emotion: str
    text: str
    topic: int | None = None  # index into topics.json; None for users' stories
    person: str | None = None  # first, third or dialogue
    register: str | None = None  # one of REGISTERS; None for users' stories


@dataclass(frozen=True)
class Corpus:
    """Emotional texts (``stories``) and neutral texts with their topics and registers."""

    stories: tuple[Story, ...]
    neutral: tuple[str, ...]
    neutral_topics: tuple[int, ...]
    neutral_registers: tuple[str, ...] = ()

    @property
    def registers(self) -> list[str]:
        return list(dict.fromkeys(s.register for s in self.stories if s.register))

    @property
    def emotions(self) -> list[str]:
        return list(dict.fromkeys(s.emotion for s in self.stories))

    def first_topics(self, n: int) -> Corpus:
        """Only the stories and neutral dialogues of topics 0..n-1: a cheaper build for big models."""
        topics = sorted({s.topic for s in self.stories})
        if not 5 <= n <= len(topics):
            raise ExplorerError(f"topics: {n}; use 5 … {len(topics)} (held-out validation needs 5 folds by topic)")
        keep = set(topics[:n])
        registers = self.neutral_registers or ("",) * len(self.neutral)
        neutral = [(t, k, r) for t, k, r in zip(self.neutral, self.neutral_topics, registers) if k in keep]
        return Corpus(
            tuple(s for s in self.stories if s.topic in keep),
            tuple(t for t, _, _ in neutral),
            tuple(k for _, k, _ in neutral),
            tuple(r for _, _, r in neutral) if self.neutral_registers else (),
        )

    def fingerprint(self) -> str:
        """sha256 over every text and label: names the corpus in vector metadata and caches."""
        digest = hashlib.sha256()
        for s in self.stories:
            digest.update(f"{s.emotion}\0{s.topic}\0{s.text}\1".encode())
        for t in self.neutral:
            digest.update(f"neutral\0{t}\1".encode())
        return digest.hexdigest()

    def with_stories(self, extra: list[Story]) -> Corpus:
        return Corpus(self.stories + tuple(extra), self.neutral, self.neutral_topics, self.neutral_registers)

    def summary(self) -> str:
        """Counts for the datasheet: emotions, texts per register, words, neutral texts."""
        words = [len(s.text.split()) for s in self.stories]
        per_register = ", ".join(f"{r} {sum(s.register == r for s in self.stories)}" for r in self.registers)
        return (
            f"{len(self.emotions)} emotions, {len(self.stories)} texts "
            f"({len(self.stories) // max(1, len(self.emotions))} per emotion; {per_register}), "
            f"{min(words)}-{max(words)} words (median {int(np.median(words))}); "
            f"{len(self.neutral)} neutral texts on {len(set(self.neutral_topics))} topics; "
            f"sha256 {self.fingerprint()[:16]}"
        )


def topics() -> list[str]:
    """The settings texts are written in; a text's ``topic`` indexes this list."""
    return json.loads((CORPUS_DIR / "topics.json").read_text())


def banned_words() -> dict[str, list[str]]:
    """Each emotion's banned words: its name, inflections and synonyms."""
    return json.loads((CORPUS_DIR / "banned.json").read_text())


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@lru_cache(maxsize=2)
def load_corpus(version: str = "v2") -> Corpus:
    """The shipped corpus: every register's texts (in :data:`REGISTERS` order, then emotion,
    then topic), and the neutral texts of every register.

    ``version="v1"`` is the first corpus alone — the 800 stories of register "story" and the 140
    Person/AI dialogues, with their own topic numbers (0-19) — which vector files built before
    corpus v2 name (``V1_CORPUS_SHA256``)."""
    if version == "v1":
        whole = load_corpus()
        stories = tuple(
            Story(s.emotion, s.text, s.topic - 20, s.person, s.register) for s in whole.stories if s.register == "story"
        )
        kept = [
            (t, k - 20) for t, k, r in zip(whole.neutral, whole.neutral_topics, whole.neutral_registers) if r == "chat"
        ]
        return Corpus(stories, tuple(t for t, _ in kept), tuple(k for _, k in kept), ("chat",) * len(kept))
    if version != "v2":
        raise ExplorerError(f"corpus version {version!r}; use 'v2' (the default) or 'v1'")
    stories, neutral = [], []
    for register in REGISTERS:
        rows = sorted(_jsonl(CORPUS_DIR / "texts" / f"{register}.jsonl"), key=lambda r: (r["emotion"], r["topic"]))
        stories += [Story(r["emotion"], r["text"], int(r["topic"]), r["person"], register) for r in rows]
    for path in sorted((CORPUS_DIR / "neutral").glob("*.jsonl")):
        neutral += [(r["text"], int(r["topic"]), path.stem) for r in _jsonl(path)]
    return Corpus(
        tuple(stories),
        tuple(t for t, _, _ in neutral),
        tuple(k for _, k, _ in neutral),
        tuple(r for _, _, r in neutral),
    )


def _jsonl_objects(path: str | Path, fields: str) -> list[tuple[str, dict]]:
    """(``"FILE, line N"``, object) for each non-blank line of a JSONL file, with one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise ExplorerError(f"{path}: no such file; give a JSONL file with one {fields} object per line")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise ExplorerError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except OSError as exc:
        raise ExplorerError(f"{path}: cannot be read ({exc.strerror or type(exc).__name__})") from None
    objects = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}, line {number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ExplorerError(f"{where}: not valid JSON ({exc.msg}); write one JSON object per line") from None
        if not isinstance(record, dict):
            raise ExplorerError(f"{where}: expected a JSON object like {fields}")
        objects.append((where, record))
    if not objects:
        raise ExplorerError(f"{path}: the file is empty; write one {fields} object per line")
    return objects


def _check_fields(where: str, record: dict, required: tuple[str, ...], optional: tuple[str, ...]) -> None:
    unknown = sorted(set(record) - set(required) - set(optional))
    if unknown:
        raise ExplorerError(f"{where}: unknown field '{unknown[0]}'; allowed: {', '.join(required + optional)}")
    for name in required:
        if name not in record:
            raise ExplorerError(f"{where}: field '{name}' is missing")
    if not isinstance(record.get("text"), str) or not record["text"].strip():
        raise ExplorerError(f"{where}: field 'text' must be a non-empty string")


def read_stories(path: str | Path) -> list[Story]:
    """Users' stories from a JSONL file, one ``{"emotion": ..., "text": ...}`` per line.

    Lines may also carry ``"topic"`` (an int) and ``"id"``; anything else is refused so a typo
    in a field name is not silently ignored.
    """
    stories = []
    for where, record in _jsonl_objects(path, '{"emotion": ..., "text": ...}'):
        _check_fields(where, record, ("emotion", "text"), ("topic", "id"))
        if not isinstance(record["emotion"], str) or not record["emotion"].strip():
            raise ExplorerError(f"{where}: field 'emotion' must be a non-empty string")
        if record.get("topic") is not None and not isinstance(record["topic"], int):
            raise ExplorerError(f"{where}: field 'topic' must be an integer")
        stories.append(Story(record["emotion"].strip().lower(), record["text"], record.get("topic")))
    return stories


def story_warnings(corpus: Corpus, extra: Sequence[Story] = (), minimum: int = 5) -> list[str]:
    """What is legal but risky in building from ``corpus`` plus ``extra`` stories, one line each:
    an emotion with fewer than ``minimum`` stories (its vector is mostly those stories' content,
    not the emotion), and a new emotion whose name is close to one of the corpus's (a typo would
    make a second, thin vector)."""
    counts = Counter(s.emotion for s in (*corpus.stories, *extra))
    known = corpus.emotions
    lines = []
    for emotion in dict.fromkeys(s.emotion for s in extra):
        close = difflib.get_close_matches(emotion, known, n=1, cutoff=0.8) if emotion not in known else []
        if close:
            lines.append(f"your emotion '{emotion}' is new but close to '{close[0]}'; check the spelling")
    thin = [e for e in counts if counts[e] < minimum]
    most = max(Counter(s.emotion for s in corpus.stories).values(), default=0)
    if thin:
        listed = ", ".join(f"'{e}' ({counts[e]})" for e in thin[:5])
        lines.append(
            f"{len(thin)} emotion(s) have fewer than {minimum} stories: {listed}; their vectors carry those stories' "
            f"content as much as the emotion: add more stories (the corpus has up to {most} per emotion)"
        )
    return lines


def read_texts(path: str | Path) -> list[dict]:
    """Texts to score from a JSONL file, one ``{"id": ..., "text": ...}`` per line."""
    records = []
    for where, record in _jsonl_objects(path, '{"id": ..., "text": ...}'):
        _check_fields(where, record, ("id", "text"), ())
        records.append(record)
    return records


def summary() -> str:
    """Counts of the shipped corpus (``explorer corpus``)."""
    return load_corpus().summary()
