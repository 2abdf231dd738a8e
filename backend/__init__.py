"""The torch world: HF model ladders, KV state, multi-level verification, profiler. Never imports simpy."""
