"""Emotion Vector Explorer: see a language model's emotion vectors light up, token by token.

import explorer as ex
model = ex.load_model()            # the default packaged model, offline
"""

from .errors import ExplorerError
from .models import DEFAULT_MODEL, ZOO, Model, load_model

__all__ = ["DEFAULT_MODEL", "ZOO", "ExplorerError", "Model", "load_model"]
__version__ = "0.1.0"
