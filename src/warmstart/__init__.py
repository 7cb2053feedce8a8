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

__all__ = ["__version__"]
