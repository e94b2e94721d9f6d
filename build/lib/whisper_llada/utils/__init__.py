"""Small helpers every layer uses: atomic file writes, file hashes, the torch.distributed process group."""
