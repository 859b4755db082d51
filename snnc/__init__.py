"""snnc: convert trained ANNs into spiking neural networks, simulate and deploy them.

    import snnc
    model = snnc.convert("model.onnx", calib=x_calib, timesteps=32)
    model.run(x_test)                  # time-averaged outputs (reference simulator)
    model.save("model.snn")
    snnc.evaluate("model.snn", x_test, y_test, timesteps=[8, 16, 32])
    snnc.calibrate("model.snn", x_calib, timesteps=16)  # re-calibrate a saved model for another T
"""

__version__ = "0.1.0"

from snnc.api import SpikingModel, calibrate, convert, evaluate, load  # noqa: E402
from snnc.errors import SnncError  # noqa: E402

__all__ = ["SpikingModel", "SnncError", "calibrate", "convert", "evaluate", "load", "__version__"]
