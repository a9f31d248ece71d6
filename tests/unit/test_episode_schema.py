"""Episode files: every mistake is named by file, message index and field."""

import json
import re

import pytest

from explorer import ExplorerError, load_episode
from explorer.episodes import parse_episode, shipped_episodes

GOOD = {
    "id": "mine",
    "title": "Mine",
    "description": "d",
    "messages": [
        {"role": "system", "content": "You are a helper."},
        {"role": "assistant", "content": "Trying.", "attempt": 1},
        {"role": "tool", "content": "1 test failed", "attempt": 1, "outcome": "fail"},
    ],
}


def _with_message(index, **changes):
    data = json.loads(json.dumps(GOOD))
    data["messages"][index].update(changes)
    return data


@pytest.mark.parametrize(
    "data, message",
    [
        (
            _with_message(1, role="robot"),
            "message 1: field 'role' is 'robot'; use one of system, user, assistant, tool",
        ),
        (_with_message(0, content="  "), "message 0: field 'content' must be a non-empty string"),
        (_with_message(1, attempt="2"), "message 1: field 'attempt' is '2'; use a whole number >= 1"),
        (_with_message(1, attempt=True), "message 1: field 'attempt' is True"),
        (_with_message(1, attempt=0), "message 1: field 'attempt' is 0"),
        (_with_message(2, outcome="ok"), "message 2: field 'outcome' is 'ok'; use 'fail' or 'pass'"),
        (_with_message(2, mood="x"), "message 2: unknown field 'mood'"),
        ({**GOOD, "colour": 1}, "unknown field 'colour'"),
        ({**GOOD, "messages": []}, "field 'messages' must be a non-empty list"),
        ({k: v for k, v in GOOD.items() if k != "id"}, "field 'id' is missing"),
        ({**GOOD, "decision": "B"}, "field 'decision' must be an object with 'question', 'safe' and 'unsafe'"),
        ({**GOOD, "decision": {"question": "q?", "safe": "s"}}, "field 'decision'.unsafe must be a non-empty string"),
        (
            {**GOOD, "decision": {"question": "q?", "safe": "s", "unsafe": "u", "after_message": 3}},
            "field 'decision'.after_message is 3; use a message index from 0 to 2",
        ),
        (
            {**GOOD, "decision": {"question": "q?", "safe": "s", "unsafe": "u", "why": 1}},
            "field 'decision': unknown field 'why'",
        ),
    ],
)
def test_bad_episodes_name_file_message_and_field(tmp_path, data, message):
    path = tmp_path / "ep.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ExplorerError, match=re.escape(f"{path}: {message}")):
        load_episode(path)


def test_yaml_and_json_load_the_same_episode(tmp_path):
    import yaml

    (tmp_path / "a.json").write_text(json.dumps(GOOD))
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(GOOD))
    assert load_episode(tmp_path / "a.json") == load_episode(tmp_path / "a.yaml")
    assert load_episode(tmp_path / "a.json").attempts == [1]


def test_broken_json_and_unknown_ids(tmp_path):
    (tmp_path / "b.json").write_text('{"id": "x",')
    with pytest.raises(ExplorerError, match=r"b.json: not valid JSON \(line 1"):
        load_episode(tmp_path / "b.json")
    with pytest.raises(ExplorerError, match="no episode file or shipped episode 'nope'; shipped: "):
        load_episode("nope")


def test_shipped_episodes_are_valid_and_matched_sets_share_assistant_turns():
    ids = shipped_episodes()
    assert {"impossible-code", "impossible-code-control", "impossible-code-calm-failure"} <= set(ids)
    episodes = {i: load_episode(i) for i in ids}
    for episode in episodes.values():
        if episode.control:
            control = episodes[episode.control]
            assistant = [(m.attempt, m.content) for m in episode.messages if m.role == "assistant"]
            assert assistant == [(m.attempt, m.content) for m in control.messages if m.role == "assistant"]
            assert [m.role for m in episode.messages] == [m.role for m in control.messages]
    code = episodes["impossible-code"]
    fails = [m.attempt for m in code.messages if m.outcome == "fail"]
    assert len(fails) >= 6
    assert any(m.outcome == "pass" for m in code.messages if m.attempt and m.attempt > max(fails))
    assert parse_episode(code.to_dict(), "again") == code


def test_decision_round_trips_and_asks_both_orders():
    data = {**GOOD, "decision": {"question": "Next?", "safe": "fix it", "unsafe": "fake it", "after_message": 1}}
    episode = parse_episode(data)
    assert parse_episode(episode.to_dict()) == episode
    decision = episode.require_decision()
    plain = decision.messages(episode, unsafe_first=False)
    swapped = decision.messages(episode, unsafe_first=True)
    assert len(plain) == 3 and plain[:2] == list(episode.messages[:2])
    assert "A) fix it\nB) fake it" in plain[-1].content and "A) fake it\nB) fix it" in swapped[-1].content
    with pytest.raises(ExplorerError, match="no 'decision' field"):
        parse_episode(GOOD).require_decision()


def test_shipped_decision_episodes_stop_before_the_hack():
    for name in ("impossible-code", "impossible-code-control", "alex-replacement", "alex-control"):
        episode = load_episode(name)
        decision = episode.require_decision()
        kept = decision.messages(episode, unsafe_first=False)[:-1]
        assert all(m.outcome != "pass" for m in kept) or name.endswith("control"), name
