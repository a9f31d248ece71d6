"""Episodes: multi-turn transcripts, validated, and rendered with a span for every token.

An episode file is JSON (or YAML) with ``id``, ``title``, ``description``, optional ``control``
(the id of a matched episode) and ``messages``; each message has ``role`` (system, user,
assistant, tool), ``content``, and optionally ``attempt`` (int >= 1) and ``outcome`` (fail|pass).

Rendering goes through the model's own chat template when it has one. Tool turns are passed to
the template with role ``tool``: Qwen2.5's template wraps them in a user turn inside
``<tool_response>`` tags; SmolLM2's writes them as a turn of their own headed ``tool``. Base models
without a template get a plain transcript with ``System:``, ``User:``, ``Assistant:`` and
``Tool:`` speaker labels. Every token is attributed to exactly one message: template tokens that
open a turn belong to the message they open.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from .errors import ExplorerError

EPISODES_DIR = Path(__file__).parent / "data" / "episodes"
ROLES = ("system", "user", "assistant", "tool")
OUTCOMES = ("fail", "pass")
EPISODE_KEYS = {"id", "title", "description", "control", "messages", "decision"}
DECISION_KEYS = {"question", "safe", "unsafe", "after_message"}
MESSAGE_KEYS = {"role", "content", "attempt", "outcome"}
SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")  # ids name trace files: no paths
PLAIN_LABELS = {"system": "System", "user": "User", "assistant": "Assistant", "tool": "Tool"}


@dataclass(frozen=True)
class Message:
    role: str
    content: str
    attempt: int | None = None
    outcome: str | None = None


@dataclass(frozen=True)
class Decision:
    """A forced choice asked at the end of an episode: which option does the model pick next?

    Parsed once from an episode's ``decision`` field; ``after_message`` keeps messages
    0..after_message before the question (default: all of them).
    """

    question: str
    safe: str
    unsafe: str
    after_message: int | None = None

    def messages(self, episode: Episode, unsafe_first: bool) -> list[Message]:
        """The episode's kept messages, then the question with the options in the given order."""
        keep = episode.messages if self.after_message is None else episode.messages[: self.after_message + 1]
        first, second = (self.unsafe, self.safe) if unsafe_first else (self.safe, self.unsafe)
        ask = f"{self.question}\n\nA) {first}\nB) {second}\n\nAnswer with the letter A or B only."
        return [*keep, Message("user", ask)]

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if v is not None}


@dataclass(frozen=True)
class Episode:
    id: str
    title: str
    description: str
    messages: tuple[Message, ...]
    control: str | None = None
    source: str = field(default="", compare=False)
    # a forced choice for steering experiments (explorer.dose_response)
    decision: Decision | None = field(default=None, hash=False)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.id, "title": self.title, "description": self.description}
        if self.control:
            data["control"] = self.control
        data["messages"] = [{k: v for k, v in vars(m).items() if v is not None} for m in self.messages]
        if self.decision is not None:
            data["decision"] = self.decision.to_dict()
        return data

    def canonical_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=False)

    @property
    def attempts(self) -> list[int]:
        return sorted({m.attempt for m in self.messages if m.attempt is not None})

    @property
    def failed_attempts(self) -> list[int]:
        """Attempts whose outcome is fail (all attempts when the episode records no outcomes)."""
        failed = sorted({m.attempt for m in self.messages if m.outcome == "fail" and m.attempt is not None})
        return failed or self.attempts

    def require_decision(self) -> Decision:
        """The episode's :class:`Decision`, or a one-line error saying how to add one."""
        if self.decision is None:
            raise ExplorerError(
                f"{self.source or self.id}: no 'decision' field; add one with 'question', 'safe' and 'unsafe' "
                "(see explorer/data/episodes/impossible-code.json)"
            )
        return self.decision


def parse_episode(data: Any, source: str = "<episode>") -> Episode:
    """Validate a decoded episode; every problem names ``source``, the message index and field."""
    if not isinstance(data, dict):
        raise ExplorerError(f"{source}: an episode must be an object with 'id', 'title' and 'messages'")
    unknown = sorted(set(data) - EPISODE_KEYS)
    if unknown:
        raise ExplorerError(f"{source}: unknown field '{unknown[0]}'; allowed: {', '.join(sorted(EPISODE_KEYS))}")
    for key in ("id", "messages"):
        if key not in data:
            raise ExplorerError(f"{source}: field '{key}' is missing")
    for key in ("id", "title", "description", "control"):
        if key in data and (not isinstance(data[key], str) or (key in ("id", "control") and not data[key].strip())):
            raise ExplorerError(f"{source}: field '{key}' must be a non-empty string")
    for key in ("id", "control"):
        if key in data and not SAFE_ID.fullmatch(data[key].strip()):
            raise ExplorerError(
                f"{source}: field '{key}' is {data[key]!r}; use letters, digits, '.', '_' and '-' only (it names files)"
            )
    raw_messages = data["messages"]
    if not isinstance(raw_messages, list) or not raw_messages:
        raise ExplorerError(f"{source}: field 'messages' must be a non-empty list")
    messages = []
    for i, m in enumerate(raw_messages):
        where = f"{source}: message {i}"
        _check_fields(m, MESSAGE_KEYS, where, f"{where}: must be an object with 'role' and 'content'")
        if m.get("role") not in ROLES:
            raise ExplorerError(f"{where}: field 'role' is {m.get('role')!r}; use one of {', '.join(ROLES)}")
        if not isinstance(m.get("content"), str) or not m["content"].strip():
            raise ExplorerError(f"{where}: field 'content' must be a non-empty string")
        attempt = m.get("attempt")
        if attempt is not None and (isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1):
            raise ExplorerError(f"{where}: field 'attempt' is {attempt!r}; use a whole number >= 1")
        outcome = m.get("outcome")
        if outcome is not None and outcome not in OUTCOMES:
            raise ExplorerError(f"{where}: field 'outcome' is {outcome!r}; use 'fail' or 'pass'")
        messages.append(Message(m["role"], m["content"], attempt, outcome))
    decision = _parse_decision(data.get("decision"), len(messages), source)
    return Episode(
        id=data["id"].strip(),
        title=data.get("title", data["id"]),
        description=data.get("description", ""),
        messages=tuple(messages),
        control=data.get("control"),
        source=source,
        decision=decision,
    )


def _check_fields(value: Any, allowed: set[str], where: str, not_an_object: str) -> None:
    """``value`` must be an object whose keys are all in ``allowed``; else a one-line error."""
    if not isinstance(value, dict):
        raise ExplorerError(not_an_object)
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise ExplorerError(f"{where}: unknown field '{unknown[0]}'; allowed: {', '.join(sorted(allowed))}")


def _parse_decision(decision: Any, n_messages: int, source: str) -> Decision | None:
    if decision is None:
        return None
    where = f"{source}: field 'decision'"
    _check_fields(decision, DECISION_KEYS, where, f"{where} must be an object with 'question', 'safe' and 'unsafe'")
    for key in ("question", "safe", "unsafe"):
        if not isinstance(decision.get(key), str) or not decision[key].strip():
            raise ExplorerError(f"{where}.{key} must be a non-empty string")
    after = decision.get("after_message")
    if after is not None and (isinstance(after, bool) or not isinstance(after, int) or not 0 <= after < n_messages):
        raise ExplorerError(f"{where}.after_message is {after!r}; use a message index from 0 to {n_messages - 1}")
    return Decision(decision["question"], decision["safe"], decision["unsafe"], after)


def shipped_episodes() -> list[str]:
    return sorted(p.stem for p in EPISODES_DIR.glob("*.json"))


def load_episode(name_or_path: str | Path) -> Episode:
    """An episode from a JSON/YAML file, or a shipped episode by id (see ``shipped_episodes()``)."""
    if not isinstance(name_or_path, str | Path) or not str(name_or_path).strip():
        raise ExplorerError(
            f"load_episode: {name_or_path!r} is not a file path or an episode id; "
            f"shipped: {', '.join(shipped_episodes())}"
        )
    path = Path(name_or_path)
    if not path.is_file():
        shipped = EPISODES_DIR / f"{name_or_path}.json"
        if not shipped.is_file():
            raise ExplorerError(
                f"no episode file or shipped episode '{name_or_path}'; shipped: {', '.join(shipped_episodes())}"
            )
        path = shipped
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ExplorerError(f"{path}: not UTF-8 text (byte {exc.start}); save the episode as UTF-8") from None
    except OSError as exc:
        raise ExplorerError(f"{path}: cannot be read ({exc.strerror or type(exc).__name__})") from None
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ExplorerError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    except Exception as exc:  # yaml.YAMLError
        raise ExplorerError(f"{path}: not valid YAML ({type(exc).__name__})") from None
    return parse_episode(data, str(path))


def escalation_templates() -> list[dict]:
    """Numeric escalation templates (``explorer/data/escalation.json``): a fixed prompt with one
    number that grows more dangerous (``danger`` "up") or less (``"down"``) as it rises."""
    return json.loads((EPISODES_DIR.parent / "escalation.json").read_text())["templates"]


def escalation_set(template_id: str) -> list[Episode]:
    """One single-message episode per value of an escalation template, in order of value."""
    templates = {t["id"]: t for t in escalation_templates()}
    if template_id not in templates:
        raise ExplorerError(f"no escalation template '{template_id}'; templates: {', '.join(templates)}")
    t = templates[template_id]
    return [
        Episode(
            id=f"{template_id}-{value:g}",
            title=f"{template_id} = {value:g}",
            description=f"Numeric escalation ({t['danger']} = more danger): {t['text']}",
            messages=(Message("user", t["text"].format(x=f"{value:g}")),),
        )
        for value in t["values"]
    ]


def load_control(episode: Episode) -> Episode:
    if not episode.control:
        raise ExplorerError(f"{episode.source or episode.id}: has no 'control'; name one with --control")
    sibling = Path(episode.source).parent / f"{episode.control}.json" if episode.source else None
    return load_episode(sibling if sibling is not None and sibling.is_file() else episode.control)


@dataclass
class RenderedEpisode:
    """The text the model reads and, per token, which message it belongs to."""

    text: str
    input_ids: list[int]
    tokens: pd.DataFrame  # token_index, message_index, role, attempt, outcome, token, start, end
    template: str  # "chat" or "plain"


def control_token_in(model, text: str) -> str | None:
    """The first of ``model``'s control tokens (e.g. ``<|im_end|>``) in ``text``, if any."""
    found = [(text.find(token), -len(token), token) for token in model.control_tokens if token in text]
    return min(found)[2] if found else None


def refuse_control_tokens(model, text: str, where: str) -> None:
    """A one-line error when ``text`` (a message's content, named by ``where``) holds one of
    ``model``'s control tokens: rendered, it would become a real turn marker rather than text."""
    token = control_token_in(model, text)
    if token is not None:
        broken = f"{token[0]} {token[1:]}"
        raise ExplorerError(
            f"{where}: contains {token!r}, a control token of '{model.name}' that would act as a real "
            f"turn marker, not text; remove it or break it up (e.g. {broken!r})"
        )


def render_text(model, messages, reply: bool = False, source: str = "<episode>") -> str:
    """What the model reads for ``messages``: its chat template, or a plain transcript with
    speaker labels for models without one. ``reply`` opens the assistant's next turn.

    A message whose content holds one of the model's control tokens (``<|im_end|>``,
    ``<|im_start|>``, ``<end_of_turn>``, ...) is refused, naming ``source`` and the message
    index: typed inside a message, such a token would end the turn or open a fake one."""
    for i, m in enumerate(messages):
        refuse_control_tokens(model, m.content, f"{source}: message {i}")
    if model.chat:
        dicts = [{"role": m.role, "content": m.content} for m in messages]
        return model.render_chat(dicts, add_generation_prompt=reply)
    text = "".join(f"{PLAIN_LABELS[m.role]}: {m.content}\n\n" for m in messages)
    return text + f"{PLAIN_LABELS['assistant']}:" if reply else text


def _message_spans(model, episode: Episode) -> tuple[str, list[tuple[int, int]], str]:
    """Rendered text and, per message, the character range of its content."""
    text = render_text(model, episode.messages, source=episode.source or episode.id)
    template = "chat" if model.chat else "plain"
    spans, cursor = [], 0
    for i, m in enumerate(episode.messages):
        start = text.find(m.content, cursor)
        if start < 0:
            raise ExplorerError(
                f"{episode.source or episode.id}: message {i}: the chat template of '{model.name}' changed its "
                "'content' (e.g. stripped spaces); remove leading/trailing whitespace from it"
            )
        spans.append((start, start + len(m.content)))
        cursor = start + len(m.content)
    return text, spans, template


def render(model, episode: Episode) -> RenderedEpisode:
    """Render ``episode`` for ``model`` and attribute every token to one message."""
    text, spans, template = _message_spans(model, episode)
    encoded = model.tokenize(text, templated=template == "chat", offsets=True)
    ids, offsets = encoded["input_ids"], encoded["offset_mapping"]
    # message i owns the characters from the end of message i-1's content to the end of its own
    boundaries = [end for _, end in spans]
    rows, m = [], 0
    for index, (token_id, (start, end)) in enumerate(zip(ids, offsets)):
        while m < len(boundaries) - 1 and start >= boundaries[m]:
            m += 1
        msg = episode.messages[m]
        rows.append(
            {
                "token_index": index,
                "message_index": m,
                "role": msg.role,
                "attempt": msg.attempt,
                "outcome": msg.outcome,
                "token": model.tokenizer.decode([token_id]),
                "start": start,
                "end": end,
                # a token may straddle the turn header and the content (" You" after "System:")
                "in_content": start < spans[m][1] and end > spans[m][0],
            }
        )
    tokens = pd.DataFrame(rows)
    tokens["attempt"] = tokens["attempt"].astype("Int64")
    return RenderedEpisode(text, list(ids), tokens, template)
