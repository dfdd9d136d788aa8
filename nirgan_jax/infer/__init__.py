"""Using a trained generator: model directories, tiled GeoTIFF prediction, evaluation,
NDVI time series, figures, and the import of the original PyTorch checkpoints.

Nothing here imports the training side (step, loop, checkpoints, input pipeline) or optax;
the model directory (``model_io``) is the contract between the two.
"""
