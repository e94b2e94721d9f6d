"""Decoding one batch: the samplers over a mask predictor (diffusion, semi-AR, deliberation, prior-guided), autoregressive decoding, and `recognize` (one batch in a mode)."""
