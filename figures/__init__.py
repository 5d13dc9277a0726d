"""Publication figures from result files (`optscale plot`, `optscale figures`)."""
