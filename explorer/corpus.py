"""The story corpus the emotion vectors are built from, and users' own stories.

The shipped corpus lives in ``explorer/data/corpus/``: one JSON file per emotion under
``stories/`` (20 one-paragraph stories, one per topic in ``topics.json``, with the emotion's banned
words) and ``neutral.json`` (emotionally neutral Person/AI dialogues on the same topics, used for
denoising and calibration). ``DATASHEET.md`` there says how it was written.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .errors import ExplorerError

CORPUS_DIR = Path(__file__).parent / "data" / "corpus"


@dataclass(frozen=True)
class Story:
    """One text labelled with the emotion its character feels."""

    emotion: str
    text: str
    topic: int | None = None  # index into topics.json; None for users' stories
    person: str | None = None


@dataclass(frozen=True)
class Corpus:
    stories: tuple[Story, ...]
    neutral: tuple[str, ...]
    neutral_topics: tuple[int, ...]

    @property
    def emotions(self) -> list[str]:
        return list(dict.fromkeys(s.emotion for s in self.stories))

    def first_topics(self, n: int) -> Corpus:
        """Only the stories and neutral dialogues of topics 0..n-1: a cheaper build for big models."""
        topics = sorted({s.topic for s in self.stories})
        if not 5 <= n <= len(topics):
            raise ExplorerError(f"topics: {n}; use 5 … {len(topics)} (held-out validation needs 5 folds by topic)")
        keep = set(topics[:n])
        neutral = [(t, k) for t, k in zip(self.neutral, self.neutral_topics) if k in keep]
        return Corpus(
            tuple(s for s in self.stories if s.topic in keep),
            tuple(t for t, _ in neutral),
            tuple(k for _, k in neutral),
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
        return Corpus(self.stories + tuple(extra), self.neutral, self.neutral_topics)


def topics() -> list[str]:
    return json.loads((CORPUS_DIR / "topics.json").read_text())


def banned_words() -> dict[str, list[str]]:
    return {p.stem: json.loads(p.read_text())["banned"] for p in sorted((CORPUS_DIR / "stories").glob("*.json"))}


@lru_cache(maxsize=1)
def load_corpus() -> Corpus:
    """The shipped corpus (stories in emotion-file order, then topic order)."""
    stories = []
    for path in sorted((CORPUS_DIR / "stories").glob("*.json")):
        data = json.loads(path.read_text())
        stories += [Story(data["emotion"], s["text"], int(s["topic"]), s.get("person")) for s in data["stories"]]
    neutral = json.loads((CORPUS_DIR / "neutral.json").read_text())["dialogues"]
    return Corpus(tuple(stories), tuple(d["text"] for d in neutral), tuple(int(d["topic"]) for d in neutral))


def _jsonl_objects(path: str | Path, fields: str) -> list[tuple[str, dict]]:
    """(``"FILE, line N"``, object) for each non-blank line of a JSONL file, with one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise ExplorerError(f"{path}: no such file; give a JSONL file with one {fields} object per line")
    objects = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
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


def read_texts(path: str | Path) -> list[dict]:
    """Texts to score from a JSONL file, one ``{"id": ..., "text": ...}`` per line."""
    records = []
    for where, record in _jsonl_objects(path, '{"id": ..., "text": ...}'):
        _check_fields(where, record, ("id", "text"), ())
        records.append(record)
    return records


def summary() -> str:
    """Counts for the datasheet: emotions, stories, words, neutral dialogues."""
    corpus = load_corpus()
    words = [len(s.text.split()) for s in corpus.stories]
    first = sum(s.person == "first" for s in corpus.stories)
    return (
        f"{len(corpus.emotions)} emotions, {len(corpus.stories)} stories "
        f"({len(corpus.stories) // max(1, len(corpus.emotions))} per emotion, {first} first person), "
        f"{min(words)}-{max(words)} words (mean {sum(words) / len(words):.0f}); "
        f"{len(corpus.neutral)} neutral dialogues on {len(set(corpus.neutral_topics))} topics; "
        f"sha256 {corpus.fingerprint()[:16]}"
    )
