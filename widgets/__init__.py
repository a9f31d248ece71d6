"""The explorer's notebook UI: scrub an episode, compare it with its control, map the vectors.

    from widgets import EpisodeScrubber, CompareView, EmotionAtlas, save_chart
    scrubber = EpisodeScrubber(trace, emotions=["desperate", "calm"])
    scrubber.save_html("episode.html")   # a standalone page, no kernel needed

This package imports ``explorer``; ``explorer`` never imports it. Names are imported on first use,
so the Jupyter server extension ``widgets.server`` loads without torch or Altair.
"""

from importlib import import_module

_HOMES = {
    "CompareView": ".compare",
    "EmotionAtlas": ".atlas",
    "EpisodeScrubber": ".scrubber",
    "TranscriptView": ".transcript",
    "save_chart": ".export",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'widgets' has no attribute '{name}'")
    value = getattr(import_module(_HOMES[name], __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_HOMES))
