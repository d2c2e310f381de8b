"""Steps for unit tests of the Slurm job runner: ``pipeline.dag.discover("tests.unit.fakesteps")``."""
