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


def test_every_required_emotion_has_enough_stories(corpus):
    assert set(REQUIRED) <= set(corpus.emotions)
    assert len(corpus.emotions) >= 40
    for emotion in corpus.emotions:
        stories = [s for s in corpus.stories if s.emotion == emotion]
        assert len(stories) >= 16, emotion
        assert len({s.topic for s in stories}) == len(stories), f"{emotion}: one story per topic"
        assert {s.person for s in stories} == {"first", "third"}, f"{emotion}: first and third person"


def test_story_lengths_are_60_to_150_words(corpus):
    bad = [(s.emotion, s.topic, len(s.text.split())) for s in corpus.stories if not 60 <= len(s.text.split()) <= 150]
    assert bad == []


def test_no_story_names_its_emotion_or_a_synonym(corpus):
    banned = banned_words()
    for emotion in corpus.emotions:
        assert emotion in banned[emotion]
    hits = [
        (s.emotion, s.topic, word)
        for s in corpus.stories
        for word in banned[s.emotion]
        if re.search(rf"\b{re.escape(word)}\b", s.text, re.IGNORECASE)
    ]
    assert hits == []


def test_stories_are_distinct(corpus):
    texts = [s.text for s in corpus.stories]
    assert len(set(texts)) == len(texts)
    openings = [" ".join(t.split()[:5]) for t in texts]
    assert len(set(openings)) > 0.95 * len(openings)


def test_neutral_dialogues_are_many_plain_and_on_the_same_topics(corpus):
    assert len(corpus.neutral) >= 120
    assert set(corpus.neutral_topics) == set(range(len(topics())))
    for text in corpus.neutral:
        assert 60 <= len(text.split()) <= 150
        assert "!" not in text
        lines = text.split("\n")
        assert all(line.startswith(("Person: ", "AI: ")) for line in lines)
        assert lines[0].startswith("Person: ")
        for word in NEUTRAL_BANNED:
            assert not re.search(rf"\b{word}\b", text, re.IGNORECASE), (word, text[:60])


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
    assert {s.topic for s in part.stories} == set(sorted({s.topic for s in corpus.stories})[:8])
    assert len(part.stories) == 8 * len(corpus.emotions) and part.emotions == corpus.emotions
    assert set(part.neutral_topics) <= {s.topic for s in part.stories} and len(part.neutral) > 0
    assert part.fingerprint() != corpus.fingerprint()
    with pytest.raises(ExplorerError, match="topics: 3; use 5"):
        corpus.first_topics(3)
