"""The commands beside `train`: sweeps and their launchers, reproduce, predict, export, the demo data.

What every command that reads a run directory shares: the way a user names their own code. A run directory
is data; it names code but never gets it run. The user names it on the command line instead, once per
command, and the same flag works in predict, export, explain and resume:

    --import my_pkg.layers   a module (or FILE.py) that registers the model's own layers with Keras
    --loader my_pkg.data.load  the loader that made the run's test set (export and explain reload it)
"""

from __future__ import annotations

import argparse


def add_user_code(parser: argparse.ArgumentParser, loader: bool = False) -> None:
    """The flags by which the user names their own code (see the module's docstring)."""
    parser.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                        help="a module of yours (my_pkg.layers, or FILE.py) to import first: it registers the "
                             "model's own layers with Keras; repeat for several")
    if loader:
        parser.add_argument("--loader", default=None, metavar="FUNCTION",
                            help="your own data loader (my_pkg.data.load or FILE.py:load) to read the run's test set "
                                 "with, where the run used one; a run directory never gets its code run")


def import_user_code(ns: argparse.Namespace) -> None:
    """Imports what --import names (before any model.keras is loaded); one line for any that fails."""
    from cnnrun.config.plugins import import_named

    import_named(getattr(ns, "imports", None) or [])
