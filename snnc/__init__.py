"""snnc: convert trained ANNs into spiking neural networks, simulate and deploy them.

    import snnc
    model = snnc.convert("model.onnx", calib=x_calib, timesteps=32)
    model.run(x_test)                  # time-averaged outputs (reference simulator)
    model.save("model.snn")
    snnc.evaluate("model.snn", x_test, y_test, timesteps=[8, 16, 32])
    snnc.calibrate("model.snn", x_calib, timesteps=16)  # re-calibrate a saved model for another T
"""

__version__ = "0.1.0"

from snnc.errors import SnncError  # noqa: E402  (standard library only)

__all__ = ["SpikingModel", "SnncError", "calibrate", "convert", "evaluate", "finetune", "load", "__version__"]

_API = ("SpikingModel", "calibrate", "convert", "evaluate", "load")
_FINETUNE = ("finetune",)  # fine-tuning with surrogate gradients: snnc.train


def __getattr__(name: str):
    """The API (and torch, which it needs) is imported on first use: ``import snnc`` stays
    cheap, so the ``snnc`` command can install its signal handlers before anything heavy."""
    import importlib

    if name in _API or name in _FINETUNE:
        value = getattr(importlib.import_module("snnc.api" if name in _API else "snnc.train"), name)
        globals()[name] = value
        return value
    if not name.startswith("_"):  # snnc.ir, snnc.passes, ... as after an eager import
        try:
            return importlib.import_module(f"snnc.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"snnc.{name}":
                raise
    raise AttributeError(f"module 'snnc' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API) | set(_FINETUNE))
