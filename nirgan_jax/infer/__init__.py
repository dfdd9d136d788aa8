"""Using a trained generator: model directories, tiled GeoTIFF prediction, NDVI time series,
figures, and the import of the original PyTorch checkpoints. (``nirgan_jax.evaluate`` scores
models over a built dataset, so it lives outside: it reads through the input pipeline.)

Nothing here imports the training side (step, loop, checkpoints, input pipeline) or optax;
the model directory (``model_dir``) is the contract between the two.
"""
