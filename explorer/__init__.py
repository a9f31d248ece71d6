"""Emotion Vector Explorer: see a language model's emotion vectors light up, token by token.

import explorer as ex
model = ex.load_model()                       # the default packaged model, offline
vectors = ex.load_vectors(model)              # shipped vectors for it (built on first use otherwise)
trace = ex.trace(model, ex.load_episode("impossible-code"), vectors)
ex.compare(model, ex.load_episode("impossible-code"), vectors, "desperate")
with ex.steer(model, vectors["calm"], 0.05):   # steering: a fraction of the layer's residual norm
    ex.generate(model, ex.load_episode("impossible-code"), vectors, after_message=13)
ex.dose_response(model, ex.load_episode("impossible-code"), vectors)   # the causal test
ex.tone_response(model, vectors)              # the positive control: does steering move the tone?
"""

__version__ = "0.1.0"  # before the imports: vectors.py records it in every file it writes

from .activations import hidden_states
from .comparison import Comparison, LayerTest, attempt_differences, compare, compare_emotions, compare_spans
from .controls import (
    ContextControl,
    ControlResults,
    context_control,
    control_results,
    load_control_results,
    shipped_control_results,
)
from .corpus import Corpus, Story, banned_words, load_corpus, read_stories
from .corpus import topics as corpus_topics
from .decisions import DoseResponse, EmotionDose, dose_response, load_dose_response, shipped_dose_responses
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
from .escalation import EscalationTest, TemplateTrend, escalation_test, escalation_tests
from .generation import Generation, generate
from .headline import load_headline, scan_floor, shipped_headlines, shown_at_rule_layer, significant
from .models import DEFAULT_MODEL, ZOO, Model, load_model
from .stats import PREDICTED_SIGN
from .steering import random_direction, steer
from .tone import ToneEmotion, ToneResponse, load_tone_response, tone_response
from .tracing import IntensityTrace, load_shipped_trace, shipped_traces, trace
from .validation import PAPER, heldout_accuracy, load_report, norms_for, probe_r
from .vectors import (
    EmotionVector,
    EmotionVectors,
    Extraction,
    Recipe,
    build_vectors,
    denoising_basis,
    emotion_directions,
    extract,
    lda_directions,
    load_vectors,
    pca_scores,
    random_unit_directions,
    score_texts,
    shuffled_labels,
)

__all__ = [
    "DEFAULT_MODEL",
    "PAPER",
    "PREDICTED_SIGN",
    "ZOO",
    "Comparison",
    "ContextControl",
    "ControlResults",
    "Corpus",
    "Decision",
    "DoseResponse",
    "EmotionDose",
    "EmotionVector",
    "EmotionVectors",
    "EscalationTest",
    "Episode",
    "ExplorerError",
    "Extraction",
    "Generation",
    "IntensityTrace",
    "LayerTest",
    "Model",
    "Recipe",
    "RenderedEpisode",
    "Story",
    "TemplateTrend",
    "ToneEmotion",
    "ToneResponse",
    "attempt_differences",
    "banned_words",
    "build_vectors",
    "compare",
    "compare_emotions",
    "compare_spans",
    "context_control",
    "control_results",
    "corpus_topics",
    "denoising_basis",
    "dose_response",
    "emotion_directions",
    "escalation_test",
    "escalation_tests",
    "lda_directions",
    "extract",
    "generate",
    "heldout_accuracy",
    "hidden_states",
    "load_control",
    "load_control_results",
    "load_corpus",
    "load_dose_response",
    "load_episode",
    "load_headline",
    "load_model",
    "load_report",
    "load_shipped_trace",
    "load_tone_response",
    "load_vectors",
    "norms_for",
    "parse_episode",
    "pca_scores",
    "probe_r",
    "random_direction",
    "random_unit_directions",
    "read_stories",
    "render",
    "scan_floor",
    "score_texts",
    "shipped_dose_responses",
    "shipped_control_results",
    "shipped_episodes",
    "shipped_headlines",
    "shipped_traces",
    "shown_at_rule_layer",
    "shuffled_labels",
    "significant",
    "steer",
    "tone_response",
    "trace",
]
