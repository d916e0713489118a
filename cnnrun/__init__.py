"""cnnrun: a Hydra-driven experiment runner for Keras 3 convolutional image classifiers."""

__version__ = "0.1.0"


class CnnrunError(Exception):
    """A problem with the user's input (config, data, paths): shown as one line, without a traceback."""
