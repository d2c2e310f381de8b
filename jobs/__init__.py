"""Pipeline steps, one module each, declared as ``STEP = Step(...)`` (see ``pipeline.dag``).

A step module is the only place where the science (``pipeline.data``, attacks, models, ...) meets
artifacts. Modules whose names start with ``_`` hold helpers shared by steps and declare no step.
Heavy imports (torch) happen inside ``run`` so that planning stays fast.
"""
