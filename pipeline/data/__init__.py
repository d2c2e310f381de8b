"""Datasets: image sources on local disk, role sampling with manifests, HDF5 shards."""
