"""Models: the one registry of methods (:mod:`.registry`), and ``build_model`` (:mod:`.factory`), the one entry
point to them.

A 2.5D method is a reducer over slice tokens (:mod:`.reducers`, :class:`.model25d.Model25D`), or over (slice,
cell) tokens (:mod:`.spatial`, beyond the paper: a voxel map out of the forward pass); a volume method is the
same 2D network converted to 3D or ACS convolutions (:mod:`.baselines`). Both expose ``features(x)`` (what a
frozen encoder gives) and ``classify(features)`` (logits).

The registry imports no torch; everything else here is imported on first use (lazy_loader), so a process that
only reads method names (the workflow's planning and steps) never pays for torch.
"""

import lazy_loader as lazy

__getattr__, __dir__, __all__ = lazy.attach(
    __name__,
    submod_attrs={
        "registry": ["METHODS", "Method", "check_method"],
        "factory": ["build_model", "count_parameters", "set_encoder_trainable"],
        "model25d": ["Model25D", "Output25D"],
        "baselines": ["VolumeClassifier"],
        "slicing": ["AXIS_NAMES", "SliceLayout"],
    },
)
