"""Data layer: image sources decoded once into uint8 tensors, patient-level splits,
client partitions and batch augmentation that runs on the images' device.

Import modules directly; this package deliberately re-exports nothing, so that sources
with heavy optional dependencies stay independent. One module per concept:

- ``sets``: :class:`~medsplit.data.sets.ImageSet` and ``SegmentationSet`` on one base
  (``BaseImageSet``), and ``SegmentationData``; ``errors``: ``DataError``
- ``images``: ``decode_images`` (decode once, cache) and ``pad_to_square``
- ``image_size``: ``MIN_IMAGE_SIZE`` and ``check_image_size``, the one image-size rule
- ``lungs``: ``load_lungs``, built from ``lung_folder`` (layouts), ``lung_pixels`` (masks,
  NIfTI), ``lung_sites`` (combined ``a+b`` sources) and ``synthetic_cxr``
- ``retinopathy``: ``load_retinopathy``, built from ``retinopathy_data`` (targets, splits),
  ``fundus_folder`` (EyePACS / Kaggle folder + CSV), ``retinamnist`` (``.npz``) and
  ``synthetic_fundus`` (the embedded generator used when no real data exists)
- ``partition``: patient splits; split a training set across clients (iid, dirichlet, label skew, group)
- ``augment``: ``BatchAugment``, ``to_float``, ``channel_stats``; ``seg_augment`` for image+mask pairs
- ``duplicates``: identical files found by content; ``cache``: safetensors cache files
- ``download``: every download, and the only code that touches the network (``make data``)
"""
