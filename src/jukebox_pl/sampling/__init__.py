"""Sampling songs: top level first, then the upsamplers, window by window, resumable; the sample gallery."""
