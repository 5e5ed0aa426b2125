"""Other fingerprints, for comparison in the same harness (data-based: they start from real images).

Every baseline returns a :class:`FingerprintSet` whose targets are the *base model's own labels* on the
returned images, so it is verified like any fingerprint (a suspect matches an example when it gives the base's
label). ``meta["baseline"]`` names the method, its parameters and its source; ``config`` is a neutral
GenerationConfig (n and seed only: these are not characteristic examples).

  frontier   frontier-stitching adversarial examples (Le Merrer et al., Neural Computing and Applications 2019)
  ipguard    boundary points (Cao et al., AsiaCCS 2021, IPGuard)
  sensitive  sensitive samples (He et al., CVPR 2019)
  disagree   natural images where independent references disagree with the base (for students; issue 15)
"""

from __future__ import annotations

from typing import Any, Callable

from .disagree import disagree
from .frontier import frontier
from .ipguard import ipguard
from .sensitive import sensitive

BASELINES: dict[str, Callable[..., Any]] = {"frontier": frontier, "ipguard": ipguard, "sensitive": sensitive,
                                            "disagree": disagree}

__all__ = ["BASELINES", "disagree", "frontier", "ipguard", "sensitive"]
