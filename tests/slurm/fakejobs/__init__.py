"""Steps for the Slurm tests only: ``pipeline.dag.discover("tests.slurm.fakejobs")`` finds them."""
