"""Module-level API: version, torch version, exception translation."""

from __future__ import annotations

import re

import pytest
import torch

import fewstep as fs


def test_version_strings() -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", fs.__version__)
    # The torch fewstep was compiled against is the one imported (same release).
    assert fs.torch_version().split("+")[0] == torch.__version__.split("+")[0]


def test_public_names() -> None:
    for name in ["VPLinear", "VPCosine", "VPDiscrete", "VE", "EDM", "FlowMatching", "timesteps", "validate_grid",
                 "GaussianMixture", "Denoiser", "solvers", "solver_info", "sample", "reference_solve"]:
        assert hasattr(fs, name), name
    assert fs.EDM is fs.VE


def test_value_error_carries_cpp_message_without_backtrace() -> None:
    with pytest.raises(ValueError, match="beta_min") as info:
        fs.VPLinear(beta_min=-1.0)
    message = str(info.value)
    assert "Exception raised from" not in message  # no C++ backtrace
    assert ".cpp" not in message


def test_value_error_is_not_a_runtime_error() -> None:
    # c10::ValueError must map to ValueError itself, not to RuntimeError.
    with pytest.raises(ValueError) as info:
        fs.VE(sigma_min=0.0)
    assert not isinstance(info.value, RuntimeError)


def test_type_error_for_wrong_argument_types() -> None:
    with pytest.raises(TypeError):
        fs.VPLinear(beta_min="a lot")
    with pytest.raises(TypeError):
        fs.timesteps("vp", steps=10)
