"""r1deploy: turn on-prem NVIDIA V100 servers into a DeepSeek-R1 serving cluster."""

__version__ = "0.1.0"
