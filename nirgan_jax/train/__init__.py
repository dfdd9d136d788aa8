"""Training: the GAN step, the loop around it (``loop.train_and_evaluate``), Orbax
checkpoints, the device mesh, preemption and the learning-rate schedule.

``python -m nirgan_jax.train --config configs/<name>.py --workdir DIR`` runs ``__main__``.
"""
