"""Adversarial attacks: one torch-free spec per attack (``catalog``), the torch implementations we
wrote ourselves (``custom``, ``ssah``), and ``build_attack``."""
