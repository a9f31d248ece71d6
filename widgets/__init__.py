"""The explorer's notebook UI: scrub an episode, compare it with its control, map the vectors.

    from widgets import EpisodeScrubber, CompareView, EmotionAtlas, save_chart
    scrubber = EpisodeScrubber(trace, emotions=["desperate", "calm"])
    scrubber.save_html("episode.html")   # a standalone page, no kernel needed

This package imports ``explorer``; ``explorer`` never imports it.
"""

from .atlas import EmotionAtlas
from .compare import CompareView
from .export import save_chart
from .scrubber import EpisodeScrubber
from .transcript import TranscriptView

__all__ = ["CompareView", "EmotionAtlas", "EpisodeScrubber", "TranscriptView", "save_chart"]
