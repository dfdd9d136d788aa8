"""The training recipes: ``get_config()`` files for ``--config configs/<name>.py``.

A package, installed with ``nirgan_jax``, so that the recipes that build on one another
(``from configs import multiscale``) load from any working directory, and ``--config
configs/<name>.py`` finds them there too (``nirgan_jax.train.__main__``).
"""
