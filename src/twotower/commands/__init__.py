"""The command-line commands, grouped by what they act on; `twotower.cli` assembles them."""
