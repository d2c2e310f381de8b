"""``pipeline bench``: the pipeline's own code measured against bare references on this machine.

Every ratio is measured in one process with the sides interleaved (the order rotates every
repetition) and medians taken, so the load other programs put on the machine weighs on all sides
alike. Measurements use a config's real artifacts; what is missing is built with the local runner
first. See ``benchmarks/README.md``.

Modules: ``core`` (what the benchmarks share: results, measuring, plans), ``train``, ``attack``,
``storage`` (shard writes, HDF5 reads), ``commands`` (latency, memory, parallel: the CLI as a child
process), ``kernels`` (pinned CPU kernels), ``run`` (the selection and the whole run).
"""
