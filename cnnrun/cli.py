"""The `cnnrun` command: which command runs, in a process set up for it (the backend's environment, signals,
credentials out of the arguments). Each command is a module of cnnrun/commands/."""

from __future__ import annotations

import importlib.util
import os
import sys


USAGE = """usage: cnnrun COMMAND [ARGS]

commands:
  train [KEY=VALUE ...]         train, evaluate and report one experiment; -m for a sweep
                                (cnnrun train --help lists the config groups)
  resume RUN_DIR|SWEEP_DIR      continue an interrupted run from its checkpoint, or re-launch a
                                sweep: finished jobs are skipped, broken-off ones continue
  compare PATH [PATH ...]       one table for runs and sweep directories (mean ± std over seeds)
  predict RUN_DIR IMAGE|DIR ... classify images with a finished run's model
  export RUN_DIR [--format F]   the model as a TensorFlow SavedModel, ONNX, LiteRT; each verified
  explain RUN_DIR [IMAGE ...]   Grad-CAM heat-maps (misclassified test images, any images given) and
                                an embedding map of the test set (t-SNE), into RUN_DIR/explain
  options [GROUP[=NAME]]        what can be set: a group's options, an option's keys, what each does

examples:
  cnnrun train dataset=fashion model=cnn4
  cnnrun train -m model=dense,mnist_cnn,cnn3 augment=none,flip
  cnnrun compare outputs/multirun/2026-11-24/10-00-00_ab12cd
"""

# Exit codes (README: "Exit codes"; the table in cnnrun/record/outcome.py). 130 / 143: Ctrl-C / SIGTERM.
from cnnrun.record.outcome import EXIT_CONFIG, EXIT_FAILED, EXIT_OK  # noqa: E402,F401



def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:
        print(USAGE, file=sys.stderr)
        print("cnnrun: error: a command is needed (train, resume, compare, predict, export, explain)", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG)
    if argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    if argv[0] in ("train", "resume", "predict", "explain", "export"):  # they run Keras; compare and --version do not
        from cnnrun.commands import quiet_backends

        quiet_backends()
    from cnnrun import signals
    from cnnrun.config.redact import take_credentials

    signals.clear()  # this command's signals only (the CLI called again in one process)
    signals.install()  # Ctrl-C and SIGTERM from the first moment on, never lost (cnnrun/signals.py)

    command, rest = argv[0], take_credentials(argv[1:])  # a tracking URI's password goes to MLflow's variables only
    try:
        _dispatch(command, rest)
    except KeyboardInterrupt:  # a signal outside any run (composing, loading a model): nothing to record
        print("cnnrun: interrupted", file=sys.stderr, flush=True)
        raise SystemExit(signals.exit_code()) from None


BACKENDS = {"tensorflow": "tensorflow", "jax": "jax"}  # KERAS_BACKEND: the module each needs


def check_backend(command: str) -> None:
    """$KERAS_BACKEND names a backend cnnrun runs on, and it is installed: else one line, before any work."""

    if command not in ("train", "resume", "predict", "explain"):
        return  # compare needs no backend; export picks TensorFlow itself
    name = os.environ.get("KERAS_BACKEND", "").strip()
    if not name:
        return
    if name not in BACKENDS:
        from cnnrun import console

        console.error(f"KERAS_BACKEND={name} is not a backend cnnrun runs on; expected tensorflow (the default) or "
                      "jax, e.g. KERAS_BACKEND=jax, or unset it")
        raise SystemExit(EXIT_CONFIG)
    if importlib.util.find_spec(BACKENDS[name]) is None:
        from cnnrun import console

        from cnnrun.config.extras import pip

        console.error(f"KERAS_BACKEND={name} but {BACKENDS[name]} is not installed; {pip('jax')} "
                      "(or unset KERAS_BACKEND for TensorFlow)")
        raise SystemExit(EXIT_CONFIG)


def _dispatch(command: str, rest: list[str]) -> None:
    check_backend(command)
    if command == "train":
        from cnnrun.commands.train import train_main

        train_main(rest)
    elif command == "resume":
        from cnnrun.commands.resume import resume_main

        resume_main(rest)
    elif command == "options":
        from cnnrun.commands.options import options_main

        options_main(rest)
    elif command == "compare":
        from cnnrun.commands.sweep import compare_main

        compare_main(rest)
    elif command == "predict":  # each command starts the backend itself once its arguments are checked
        from cnnrun.commands.predict import predict_main

        predict_main(rest)
    elif command == "explain":
        from cnnrun.commands.explain import explain_main

        explain_main(rest)
    elif command == "export":  # on TensorFlow, whose converters these are (export._start_tensorflow)
        from cnnrun.commands.export import export_main

        export_main(rest)
    elif command in ("-V", "--version", "version"):
        from cnnrun import __version__

        print(f"cnnrun {__version__}")
    else:
        print(f"cnnrun: error: unknown command {command!r}; expected train, resume, compare, predict, export, explain or options (cnnrun --help)",
              file=sys.stderr)
        raise SystemExit(EXIT_CONFIG)
