"""Runners execute a plan: on this machine (``local``) or as Slurm jobs through submitit (``slurm``)."""
