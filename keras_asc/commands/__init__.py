"""Subcommands of the ``keras-asc`` command, one module each (see ``keras_asc/cli.py``)."""
