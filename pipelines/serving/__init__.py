"""Serving: batch prediction over lake partitions, the compiled tree scorer, and post-training quantization to TFLite for the edge."""
