"""`python -m uscl` (and so `torchrun -m uscl ...`)."""

from uscl.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
