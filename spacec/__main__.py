"""`python -m spacec ...` (and `torchrun -m spacec ...`): the command line."""

from spacec.cli import run

run()
