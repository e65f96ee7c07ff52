"""`python -m drgdip`: the command line."""
from drgdip.cli import main

main(prog_name="drgdip")
