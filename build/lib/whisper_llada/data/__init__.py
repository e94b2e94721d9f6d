"""Data: the audio front end, test-set manifests, lhotse corpora, synthetic corpora and speech, training batches, feature and encoder-output caches."""
