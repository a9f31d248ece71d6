"""The shipped story corpus keeps its own rules (see explorer/data/corpus/DATASHEET.md)."""

import re

import pytest

from explorer import ExplorerError
from explorer.corpus import banned_words, load_corpus, read_stories, read_texts, topics

REQUIRED = """desperate calm afraid angry happy sad loving hostile blissful brooding playful proud ashamed
guilty hopeful frustrated anxious relieved bored excited content lonely grateful jealous nervous panicked
resigned determined embarrassed disgusted surprised nostalgic confident overwhelmed serene furious
terrified exhausted amused humiliated""".split()
NEUTRAL_BANNED = """happy sad glad sorry love hate afraid worried excited angry scared upset thrilled
unfortunately wonderful great amazing terrible awful desperate furious""".split()


@pytest.fixture(scope="module")
def corpus():
    return load_corpus()


# word counts each register is written to (DATASHEET.md)
LENGTHS = {
    "story": (60, 150),
    "narrative": (45, 110),
    "diary": (45, 110),
    "assistant": (20, 90),
    "dialogue": (35, 110),
    "workchat": (20, 90),
    "short": (5, 35),
}


def test_every_emotion_has_at_least_60_texts_over_at_least_5_registers(corpus):
    assert set(REQUIRED) <= set(corpus.emotions)
    assert len(corpus.emotions) >= 40
    assert set(corpus.registers) == set(LENGTHS)
    for emotion in corpus.emotions:
        texts = [s for s in corpus.stories if s.emotion == emotion]
        assert len(texts) >= 60, emotion
        assert len({s.register for s in texts}) >= 5, emotion
        keys = [(s.register, s.topic) for s in texts]
        assert len(set(keys)) == len(keys), f"{emotion}: one text per register and topic"
        assert {"first", "third", "dialogue"} <= {s.person for s in texts}, emotion


def test_every_register_and_topic_pass_covers_all_emotions(corpus):
    """Written pass by pass per topic and register: each (register, topic) has every emotion."""
    passes = {}
    for s in corpus.stories:
        passes.setdefault((s.register, s.topic), set()).add(s.emotion)
    incomplete = [key for key, emotions in passes.items() if emotions != set(corpus.emotions)]
    assert incomplete == []


def test_text_lengths_fit_their_register(corpus):
    bad = [
        (s.register, s.emotion, s.topic, len(s.text.split()))
        for s in corpus.stories
        if not LENGTHS[s.register][0] <= len(s.text.split()) <= LENGTHS[s.register][1]
    ]
    assert bad == []


def test_no_text_names_its_emotion_or_a_synonym(corpus):
    banned = banned_words()
    for emotion in corpus.emotions:
        assert emotion in banned[emotion]
    hits = [
        (s.register, s.emotion, s.topic, word)
        for s in corpus.stories
        for word in banned[s.emotion]
        if re.search(rf"\b{re.escape(word)}\b", s.text, re.IGNORECASE)
    ]
    assert hits == []


def test_a_planted_banned_word_is_caught():
    banned = banned_words()["desperate"]
    assert any(re.search(rf"\b{re.escape(w)}\b", "She felt Desperate.", re.IGNORECASE) for w in banned)


def test_texts_are_distinct(corpus):
    texts = [s.text for s in corpus.stories]
    assert len(set(texts)) == len(texts)
    openings = [" ".join(t.split()[:5]) for t in texts]
    assert len(set(openings)) > 0.9 * len(openings)


def test_neutral_texts_are_many_plain_and_in_the_same_registers(corpus):
    assert len(corpus.neutral) >= 300
    assert set(corpus.neutral_topics) <= set(range(len(topics())))
    assert set(corpus.registers) - {"story", "dialogue"} <= set(corpus.neutral_registers)
    every_banned = {w for words in banned_words().values() for w in words}
    for text, register in zip(corpus.neutral, corpus.neutral_registers):
        assert "!" not in text, text[:60]
        for word in NEUTRAL_BANNED:
            assert not re.search(rf"\b{word}\b", text, re.IGNORECASE), (word, text[:60])
        if register != "chat":
            words = set(re.findall(r"[a-z][a-z'-]*", text.lower()))
            assert not words & every_banned, (register, sorted(words & every_banned), text[:60])


def test_user_story_files_are_validated_with_file_line_and_field(tmp_path):
    good = tmp_path / "mine.jsonl"
    good.write_text('{"emotion": "Wistful", "text": "She looked at the old photo."}\n\n')
    assert read_stories(good)[0].emotion == "wistful"
    cases = {
        '{"emotion": "x", "txt": "a"}': "line 1: unknown field 'txt'",
        '{"emotion": "x"}': "line 1: field 'text' is missing",
        '{"emotion": "", "text": "a"}': "line 1: field 'emotion' must be a non-empty string",
        '{"emotion": "x", "text": "a", "topic": "two"}': "line 1: field 'topic' must be an integer",
        "not json": "line 1: not valid JSON",
    }
    for line, message in cases.items():
        bad = tmp_path / "bad.jsonl"
        bad.write_text(line + "\n")
        with pytest.raises(ExplorerError, match=re.escape(f"{bad}, {message}")):
            read_stories(bad)
    with pytest.raises(ExplorerError, match="no such file"):
        read_stories(tmp_path / "nope.jsonl")
    texts = tmp_path / "t.jsonl"
    texts.write_text('{"id": 1, "text": "hello"}\n{"id": 2, "text": " "}\n')
    with pytest.raises(ExplorerError, match="line 2: field 'text' must be a non-empty string"):
        read_texts(texts)


def test_first_topics_keeps_whole_topics_for_every_emotion():
    from explorer.corpus import load_corpus

    corpus = load_corpus()
    part = corpus.first_topics(8)
    kept = set(sorted({s.topic for s in corpus.stories})[:8])
    assert {s.topic for s in part.stories} == kept
    assert len(part.stories) == sum(s.topic in kept for s in corpus.stories) and part.emotions == corpus.emotions
    assert set(part.neutral_topics) <= {s.topic for s in part.stories} and len(part.neutral) > 0
    assert part.fingerprint() != corpus.fingerprint()
    with pytest.raises(ExplorerError, match="topics: 3; use 5"):
        corpus.first_topics(3)
