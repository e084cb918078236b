"""The training stages, one module each, in :data:`v2a_export.train.recipe.STAGES` order:
``data`` (render the training set's mels), ``vae``, ``vocoder``, ``encoders`` (auxiliary
targets), ``features`` (frozen encoders + VAE posterior means) and ``flow``."""

from . import data, encoders, features, flow, vae, vocoder

__all__ = ["data", "encoders", "features", "flow", "vae", "vocoder"]
