"""`python -m cnnrun ...` is the same as the `cnnrun` console script."""

from cnnrun.cli import main

main()
