"""Pure policy and data mapping: no I/O, no clock reads; every input is an argument."""
