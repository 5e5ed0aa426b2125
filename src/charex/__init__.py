"""charex: characteristic-example fingerprints of image classifiers (Wang et al.).

Example:
    >>> import charex
    >>> model = charex.load_model("bundled:base")  # doctest: +SKIP
    >>> fp = charex.generate(model, charex.GenerationConfig(method="ltrc", delta=0.03, k=2, q=10))  # doctest: +SKIP
    >>> fp.save("fp.safetensors")  # doctest: +SKIP
"""

from ._version import __version__  # noqa: E402,F401

from .errors import CharexError, FingerprintFileError, ModelLoadError  # noqa: E402
from .fingerprint import FingerprintSet  # noqa: E402
from .make.generate import generate  # noqa: E402
from .models import build_arch, load_model, save_model, state_digest  # noqa: E402
from .types import GenerationConfig, Verdict  # noqa: E402
from .judge.query import verify  # noqa: E402
from .judge.verify import calibrate, match_rate  # noqa: E402

__all__ = [
    "CharexError", "FingerprintFileError", "FingerprintSet", "GenerationConfig", "ModelLoadError", "Verdict",
    "__version__", "build_arch", "calibrate", "generate", "load_model", "match_rate", "save_model",
    "state_digest", "verify",
]
