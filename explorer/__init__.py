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

from .corpus import Story, read_stories
from .episodes import Episode, load_control, load_episode, shipped_episodes
from .errors import ExplorerError
from .headline import load_headline, shipped_headlines
from .models import DEFAULT_MODEL, ZOO, Model, load_model
from .stats import compare
from .steering import Generation, dose_response, generate, steer
from .tracing import IntensityTrace, load_shipped_trace, shipped_traces, trace
from .vectors import EmotionVector, EmotionVectors, Recipe, build_vectors, load_vectors, score_texts

__all__ = [
    "DEFAULT_MODEL",
    "ZOO",
    "EmotionVector",
    "EmotionVectors",
    "Episode",
    "ExplorerError",
    "Generation",
    "IntensityTrace",
    "Model",
    "Recipe",
    "Story",
    "build_vectors",
    "compare",
    "dose_response",
    "generate",
    "load_control",
    "load_episode",
    "load_headline",
    "load_model",
    "load_shipped_trace",
    "load_vectors",
    "read_stories",
    "score_texts",
    "shipped_episodes",
    "shipped_headlines",
    "shipped_traces",
    "steer",
    "trace",
]
