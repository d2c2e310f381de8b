"""``pipeline describe models``: the CAE, the AAE and the trained baselines a config builds."""

from __future__ import annotations

from dataclasses import asdict

from pipeline.config import Config


def describe_models(config: Config) -> str:
    """Layers, weight shapes and parameter counts of every recovery model, for this config's images."""
    from pipeline.models import MODELS, describe

    shape = (3, config.sample.image_size, config.sample.image_size)
    sections = {"cae": config.cae.arch, "aae": config.aae.arch,
                **{name: config.aae.arch for name in config.aae.baselines}}
    blocks = [f"== {name} ==\n{describe(MODELS[name](shape, asdict(arch)))}" for name, arch in sections.items()]
    return "\n\n".join(blocks)
