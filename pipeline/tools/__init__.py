"""Tools around the pipeline, not part of it: ``pipeline bench`` and the README renderer."""
