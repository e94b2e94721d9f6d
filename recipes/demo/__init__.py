"""The README's main job: the demo model's corpus, retraining, decoding in every mode, tables and plot."""
