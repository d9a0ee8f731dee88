"""fm-bench: accuracy against latency per backend x precision x batch size, and machine records."""
