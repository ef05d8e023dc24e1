/// @file models/transforms.h
/// @brief Denoisers made from denoisers: x̂_0 clipping and dynamic thresholding, and the VE view
///        of a VP model.
///
/// x̂_0 processing (diffusers' `clip_sample` and `thresholding` options):
///  - clip:      x̂_0 ← clamp(x̂_0, −range, range);
///  - threshold: dynamic thresholding (Saharia et al. 2022, arXiv 2205.11487, §2.3): per sample,
///               s = clamp(quantile(|x̂_0|, ratio), 1, max_value), x̂_0 ← clamp(x̂_0, −s, s)/s.
/// With `update_eps` (default) ε̂ is recomputed from the processed x̂_0, ε̂ = (x − α x̂_0)/σ, so the
/// pair stays a consistent point of x = α x̂_0 + σ ε̂ and every solver, data or noise form, sees the
/// same model; without it ε̂ is the network's own (diffusers' DDIMScheduler with
/// use_clipped_model_output=False mixes the two that way).
///
/// VE view (Karras et al. 2022, arXiv 2206.00364, §2 and Table 1; docs/design.md §1): a VP model at
/// x = α x_0 + σ ε is the VE model at x/α = x_0 + σ̃ ε, σ̃ = σ/α = e^{−λ}. `ve_view` returns that
/// model on `VE(σ̃(t_min), σ̃(t_max))`, whose time is σ̃: the same (x̂_0, ε̂), evaluated at
/// x_vp = α x_ve and the VP time t(λ = −log σ̃). Exponential integrators (DDIM, DPM-Solver, UniPC,
/// DEIS) give the same samples either way, since they only see λ; Euler and Heun step in the time
/// variable, so on the view they step in σ̃, which is what k-diffusion's samplers and diffusers'
/// EulerDiscrete/HeunDiscrete schedulers do. Start it from x_T/α(t_max).
#pragma once

#include "fewstep/models/denoiser.h"

namespace fewstep {

/// x̂_0 ← clamp(x̂_0, −range, range); range finite and > 0.
Denoiser clip_x0(Denoiser model, double range = 1.0, bool update_eps = true);

/// Dynamic thresholding of x̂_0 with the per-sample `ratio` quantile of |x̂_0| (in (0, 1]),
/// clamped to [1, max_value] (max_value >= 1).
Denoiser threshold_x0(Denoiser model, double ratio = 0.995, double max_value = 1.0, bool update_eps = true);

/// The VE view of a VP model (family VP, ValueError otherwise).
Denoiser ve_view(Denoiser vp);

}  // namespace fewstep
