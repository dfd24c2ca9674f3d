"""carbonshift: carbon-aware placement and scheduling of GPU training Jobs on Kubernetes."""

__version__ = "0.1.0"
