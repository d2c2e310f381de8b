"""Runners execute a plan: in-process (``local``) or as Slurm jobs through submitit (``slurm``)."""
