/// @file psld/hsm_loss.h
/// @brief Hybrid score matching for PSLD: noised inputs and the ε-regression loss.
///
/// HSM (Dockhorn et al. 2022, used by PSLD §3) conditions the kernel on x_0 only and integrates
/// m_0 ~ N(0, κM) out, so for t ~ U(t_min, t_max), ε ~ N(0, I_{2C}):
///   z_t = μ_t(x_0) + L_t ε          (psld/process.h)
///   loss = mean_b mean_j (ε̂_θ(z_t, t) − ε)²_{b,j}
/// which is the HSM objective E‖s_θ − ∇ log p(z_t | x_0)‖²_{Σ_t} in the ε-parameterisation
/// s_θ = −L_t⁻ᵀ ε̂_θ (the "uniform" ε weighting; PSLD's CIFAR-10 runs use the same).
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include "fewstep/psld/process.h"

namespace fewstep {

struct HsmInputs {
  at::Tensor z_t;  ///< [B, 2C, ...] network input, x0's dtype
  at::Tensor t;    ///< [B] times in x0's dtype (the network's time input)
  at::Tensor eps;  ///< [B, 2C, ...] regression target
};

/// Draws t and ε with `generator` (CPU) for data x0 [B, C, ...].
HsmInputs hsm_inputs(const PsldProcess& process, const at::Tensor& x0, at::Generator generator);

/// mean((eps_pred − eps)²): a scalar autograd differentiates (ValueError on a shape mismatch).
at::Tensor hsm_loss(const at::Tensor& eps_pred, const HsmInputs& inputs);

}  // namespace fewstep
