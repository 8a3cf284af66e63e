"""One module per subcommand.

Each module defines ``NAME`` (the subcommand), ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``. The CLI discovers them,
so adding a subcommand never touches cli.py. Keep them thin: parse, call the
Python API, print.
"""
