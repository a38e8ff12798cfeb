"""The ``bssl`` command line driven as a user drives it: bad input and resource failures, end to end."""
