"""Images: the diffusers pipeline, where it runs, and how it recovers from running out of memory."""
