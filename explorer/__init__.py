"""Emotion Vector Explorer: see a language model's emotion vectors light up, token by token.

import explorer as ex
model = ex.load_model()                       # the default packaged model, offline
vectors = ex.load_vectors(model)              # shipped vectors for it (built on first use otherwise)
trace = ex.trace(model, ex.load_episode("impossible-code"), vectors)
ex.compare(model, ex.load_episode("impossible-code"), vectors, "desperate")
with ex.steer(model, vectors["calm"], 0.05):   # steering: a fraction of the layer's residual norm
    ex.generate(model, ex.load_episode("impossible-code"), vectors, after_message=13)
ex.dose_response(model, ex.load_episode("impossible-code"), vectors)   # the causal test
"""

__version__ = "0.1.0"  # before the imports: vectors.py records it in every file it writes

from .comparison import Comparison, LayerTest, attempt_differences, compare, compare_emotions
from .corpus import Story, read_stories
from .decisions import DoseResponse, EmotionDose, dose_response
from .episodes import (
    Decision,
    Episode,
    RenderedEpisode,
    load_control,
    load_episode,
    parse_episode,
    render,
    shipped_episodes,
)
from .errors import ExplorerError
from .generation import Generation, generate
from .headline import load_headline, scan_floor, shipped_headlines, shown_at_rule_layer, significant
from .models import DEFAULT_MODEL, ZOO, Model, load_model
from .stats import PREDICTED_SIGN
from .steering import random_direction, steer
from .tracing import IntensityTrace, load_shipped_trace, shipped_traces, trace
from .vectors import (
    EmotionVector,
    EmotionVectors,
    Recipe,
    build_vectors,
    load_vectors,
    random_unit_directions,
    score_texts,
)

__all__ = [
    "DEFAULT_MODEL",
    "PREDICTED_SIGN",
    "ZOO",
    "Comparison",
    "Decision",
    "DoseResponse",
    "EmotionDose",
    "EmotionVector",
    "EmotionVectors",
    "Episode",
    "ExplorerError",
    "Generation",
    "IntensityTrace",
    "LayerTest",
    "Model",
    "Recipe",
    "RenderedEpisode",
    "Story",
    "attempt_differences",
    "build_vectors",
    "compare",
    "compare_emotions",
    "dose_response",
    "generate",
    "load_control",
    "load_episode",
    "load_headline",
    "load_model",
    "load_shipped_trace",
    "load_vectors",
    "parse_episode",
    "random_direction",
    "random_unit_directions",
    "read_stories",
    "render",
    "scan_floor",
    "score_texts",
    "shipped_episodes",
    "shipped_headlines",
    "shipped_traces",
    "shown_at_rule_layer",
    "significant",
    "steer",
    "trace",
]
