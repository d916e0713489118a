"""cnnrun's Hydra configs. Importing this package (Hydra does, to read `pkg://cnnrun.conf`) stores the
structured-config schemas that the YAML files extend."""

from cnnrun.config.schema import register as _register

_register()
