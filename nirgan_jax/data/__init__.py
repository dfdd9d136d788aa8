"""Training data: Grain pipelines over the ``data_prep`` ArrayRecord datasets and the
per-example resampling and augmentation they apply."""
