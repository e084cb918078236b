"""``v2a bench``: the real pipeline under MLPerf LoadGen's load scenarios.

One LoadGen *query sample* is one generate request (a video + prompt -> watermarked
soundtracks), served by :class:`~.loadgen.PipelineSUT` on worker threads; LoadGen schedules the
queries (SingleStream: one at a time; MultiStream: one query of N samples at a time; Server:
Poisson arrivals at a target rate; Offline: all at once), times them and judges the run's
validity. :func:`~.runner.run_bench` runs each bundle under a scenario in interleaved rounds and
returns a :class:`~.runner.BenchReport`;
:mod:`.report` turns it into JSON, markdown and plots; :mod:`.graphs` times components alone.

- :mod:`.config` — :class:`BenchConfig`, the one frozen description of a benchmark run;
- :mod:`.loadgen` — the LoadGen binding (optional ``bench`` extra), SUT and log parsing;
- :mod:`.workload` — the requests: a rendered world scene or the user's videos, as files
  (decode timed) or pre-decoded frames;
- :mod:`.stats` — percentiles (LoadGen's rule) and the machine description, shared with the
  repository's ``benchmarks/`` scripts.

Silent like the rest of the library: progress goes to a callback, the CLI prints.
"""

from .config import SCENARIOS, BenchConfig, BenchError

__all__ = ["SCENARIOS", "BenchConfig", "BenchError"]
