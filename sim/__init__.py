"""Monte Carlo simulator validating the OptScale bound (`optscale simulate`)."""
