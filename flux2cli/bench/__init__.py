"""`flux2 bench`: the FLUX.2 transformer and VAE at their real sizes, with random weights.

``arch`` (presets) and ``flops`` (the analytic FLOP count) are plain Python; ``runner``
imports torch and diffusers inside its functions, so importing this package stays cheap.
"""
