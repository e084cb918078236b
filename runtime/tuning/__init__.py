"""Few-step samplers tuned on a bundle's own network, forward only (docs/samplers.md).

``v2a-export tune-sampler BUNDLE`` is the command; this package is its torch-free work:

- :mod:`.calibration`: condition sets (videos + prompts through the bundle's encoders, or
  seeded random features) with their noise, encoded once;
- :mod:`.reference`: converged reference trajectories, stored on a fine grid;
- :mod:`.search`: time grids by dynamic programming over the stored trajectory (GITS/OSS);
- :mod:`.fit`: multistep weights by least squares (bespoke/BNS solvers, forward only);
- :mod:`.tune`: the whole run, the held-out gate, and the manifest update.
"""

from .calibration import (
    CalibrationError,
    ConditionSet,
    Item,
    batched_inputs,
    encode_items,
    random_conditions,
    random_features,
)
from .reference import Reference, relative_error
from .tune import NotConverged, Progress, TuneOptions, TuneResult, tune, with_samplers

__all__ = [
    "CalibrationError",
    "ConditionSet",
    "Item",
    "NotConverged",
    "Progress",
    "Reference",
    "TuneOptions",
    "TuneResult",
    "batched_inputs",
    "encode_items",
    "random_conditions",
    "random_features",
    "relative_error",
    "tune",
    "with_samplers",
]
