"""One module per subcommand.

Each module defines ``NAME`` (the subcommand), ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``. The CLI discovers them,
so adding a subcommand never touches cli.py. Keep them thin: parse, call the
Python API, print.
"""

# Imports inside the functions of these modules are lazy on purpose: the CLI imports every
# command module to build its parser, so a heavy import at module level (torch, sklearn,
# av...) would slow down `uscl --help` and every other command. Leave them where they are.
