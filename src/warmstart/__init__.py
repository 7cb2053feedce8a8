"""warmstart: fine-tune pretrained models with a chosen strategy, measured and compared."""

import os

from warmstart.version import __version__

# Never reach for a model hub at run time unless the user opts in: the built-in models are
# shipped in packages, and a silent download attempt only adds a long timeout offline. Set
# before anything below imports transformers or huggingface_hub, which read them on import.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

# Registration by import: each strategy registers itself and its options dataclass, which
# loading a config needs (`config.STRATEGY_OPTIONS`), so importing any part of warmstart
# makes every built-in strategy known.
from warmstart import strategies  # noqa: E402,F401,I001

# The Python API (`api.py`), imported on first use: `warmstart ls` and the CLI's start-up do
# not pay for what training, comparing and predicting import.
API = ("Model", "Run", "compare", "distill", "ensemble", "load", "read_summary", "soup",
       "train")
__all__ = ["__version__", *API]


def __getattr__(name: str):  # noqa: ANN202  (module-level lazy attributes, PEP 562)
    if name in API:
        from warmstart import api

        return getattr(api, name)
    raise AttributeError(f"module 'warmstart' has no attribute {name!r}")
