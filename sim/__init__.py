"""The SimPy world: GPUs, model servers, batching, latency and acceptance models. Never imports torch."""
