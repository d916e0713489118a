"""cnnrun: a Hydra-driven experiment runner for Keras 3 convolutional image classifiers."""

__version__ = "0.1.0"


class CnnrunError(Exception):
    """A problem with the user's input (config, data, paths): shown as one line, without a traceback. A value
    quoted in the message keeps it one line: its line breaks and other control characters are written escaped."""

    def __init__(self, message: object = "", *args):
        super().__init__(_one_line(str(message)), *args)


def _one_line(text: str) -> str:
    import unicodedata

    return "".join(repr(c)[1:-1] if unicodedata.category(c) in ("Cc", "Zl", "Zp") else c for c in text)


def _register_checkout_configs() -> None:
    """Lets `cnnrun.conf` resolve in a source checkout run without installing (PYTHONPATH=., as on an
    offline GPU box): there conf/ sits beside the package instead of inside it as in a wheel."""
    import importlib.util
    import sys
    from pathlib import Path

    if importlib.util.find_spec(f"{__name__}.conf") is not None:
        return  # installed (wheel or editable): the packaging maps conf/ already
    conf = Path(__file__).resolve().parent.parent / "conf"
    if (conf / "__init__.py").is_file():
        spec = importlib.util.spec_from_file_location(f"{__name__}.conf", conf / "__init__.py",
                                                      submodule_search_locations=[str(conf)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)


_register_checkout_configs()
