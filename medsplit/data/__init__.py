"""Data layer: image sources decoded once into uint8 tensors, patient-level splits,
client partitions and batch augmentation that runs on the images' device.

Import modules directly; this package deliberately re-exports nothing, so that sources
with heavy optional dependencies stay independent. The retinopathy part:

- ``images``: :class:`~medsplit.data.images.ImageSet`, ``DataError``, ``decode_images``
- ``retinopathy``: EyePACS / Kaggle folders, RetinaMNIST ``.npz``, synthetic fundus
- ``synthetic_fundus``: the embedded fundus-like generator used when no real data exists
- ``partition``: split a training set across clients (iid, dirichlet, label skew, group)
- ``augment``: ``BatchAugment``, ``to_float``, ``channel_stats``
- ``download``: the only code that touches the network (``make data``)
"""
