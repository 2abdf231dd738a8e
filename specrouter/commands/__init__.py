"""Sub-commands of the specrouter CLI; each module exposes register(subparsers)."""
