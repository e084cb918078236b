"""Reference problems with known answers, for the tests and the benchmarks (never used by the
pipeline): :mod:`.flow` (a Gaussian-mixture flow with a closed-form velocity), :mod:`.clips`
(synthesized host clips for the watermark: speech via espeak-ng, music, ambience, foley) and
:mod:`.attacks` (the watermark robustness attacks: codecs, filters, noise, time-scale edits).
"""
