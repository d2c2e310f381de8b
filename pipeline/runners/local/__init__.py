"""The local runner: a plan's pending tasks on this machine, one at a time in this process or
several at once in worker processes.

Modules: ``runner`` (``run_plan``, ``-j``), ``resources`` (what the machine offers and how many tasks
run at once), ``parallel`` (the parallel run), ``pool`` and ``worker`` (its worker processes),
``_preload`` (what their fork server imports), ``progress`` (what a parallel run shows).
"""
