"""`flux2 bench`: the FLUX.2 transformer and VAE at their real sizes, with random weights.

``arch`` (presets), ``flops`` (the analytic FLOP count), ``memory`` (the estimate) and
``report`` (the typed result) are plain Python. ``weights`` builds and fills the model,
``timing`` measures it, and ``runner`` composes them; those import torch and diffusers
inside their functions, so importing this package stays cheap. The device is picked by
``flux2cli.probe``, like everywhere else.
"""
