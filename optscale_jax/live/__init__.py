"""Live adapter: vLLM sampling, verifier scoring and online OptScale stopping (`optscale sample`)."""
