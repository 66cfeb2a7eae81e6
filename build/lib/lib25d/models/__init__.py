"""Models: 2.5D slice models with five reducers, and 3D / ACS baselines."""
from .factory import METHODS, build_model, count_parameters, num_outputs, set_encoder_trainable
from .model25d import Model25D, Output25D
from .baselines import VolumeClassifier
from .slicing import AXIS_NAMES, SliceLayout

__all__ = ["METHODS", "build_model", "count_parameters", "num_outputs", "set_encoder_trainable",
           "Model25D", "Output25D", "VolumeClassifier", "AXIS_NAMES", "SliceLayout"]
