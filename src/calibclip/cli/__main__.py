"""`python -m calibclip.cli …` runs the command line."""

from calibclip.cli import main

main()
