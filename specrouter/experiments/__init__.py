"""Experiments that close the loop: compare policies, validate the simulator against the
real backend, and search a policy's knobs (the logic behind ``specrouter compare``,
``validate``, ``search`` and ``demo``)."""
