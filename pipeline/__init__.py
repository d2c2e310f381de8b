"""advrecover: a batch pipeline reproducing cross-domain self-supervised adversarial sample recovery."""

__version__ = "0.1.0"
