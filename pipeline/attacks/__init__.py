"""Adversarial attacks: parameters (torch-free), the registry and SSAH."""
