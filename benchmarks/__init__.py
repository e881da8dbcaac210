"""fnrun_nb's benchmark suite: ``python -m benchmarks [--quick]`` (``make bench``).

Each section is a module with ``run(quick: bool) -> dict`` (the dict described in
``_report``); the runner (``__main__``) runs them in order, prints one table, and
writes JSON and markdown under ``benchmarks/results/``.  The method (interleaved
rounds, paired ratios, medians with interquartile ranges, CPU pinning, machine facts)
lives in ``_method``; the minimal fnrun host every comparison is measured against
lives in ``_floor``.

Sections: latency, throughput, payload, recording, coldstart, monitor_overhead,
dask_scaling.  A section whose module does not exist yet is reported as missing,
never estimated.
"""
