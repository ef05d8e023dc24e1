/// @file psld/reference.h
/// @brief The exact law of one reverse-SDE step when the score is affine in z (Gaussian data):
/// the reference of the local-error analysis in docs/psld.md.
///
/// For 1-D Gaussian data the marginal score is affine, s(z, t) = S_t z + q_t, so the reverse SDE of
/// psld/sampler.h is linear, dz = (J(r) z + k(r)) dr + √D dW with J = −A + D S_t, k = D q_t, and
/// one step from a point z_0 = (x_0, m_0) at time s to t has a Gaussian law whose mean and
/// covariance solve
///   dμ/dr = J μ + k,   dP/dr = J P + P Jᵀ + D,   μ(0) = z_0, P(0) = 0,   r ∈ [0, B(s) − B(t)],
/// integrated here with RK4 (S_t, q_t read off three score evaluations per stage, so any model
/// with an affine score works, e.g. `PsldModel::exact` of a one-component, 1-D mixture).
#pragma once

#include <cstdint>

#include "fewstep/core/noise.h"
#include "fewstep/psld/model.h"
#include "fewstep/psld/process.h"
#include "fewstep/psld/sampler.h"

namespace fewstep {

struct PsldStepLaw {
  double mean_x = 0, mean_m = 0;
  Cov2 cov;
};

/// The exact law of z_t given z_s = (x0, m0), t < s, for a model of 1-D data (z of shape [B, 2])
/// whose score is affine in z; `substeps` RK4 steps (ValueError for t >= s or substeps < 1).
PsldStepLaw psld_affine_step_law(const PsldModel& model, double x0, double m0, double s, double t,
                                 int substeps = 400);

/// The local weak error of one step of `sampler` from (x0, m0), s → t, against `law`: the largest
/// |Δ| of the two means and of the three covariance entries of n samples of the step (noise from
/// `noise`), with their Monte-Carlo standard errors √(v/n) and v √(2/n), v the larger exact variance.
struct PsldLocalError {
  double mean = 0, cov = 0, mean_se = 0, cov_se = 0;
};
PsldLocalError psld_local_error(const PsldModel& model, const PsldSampler& sampler, const PsldStepLaw& law, double x0,
                                double m0, double s, double t, int64_t n, NoiseSampler& noise);

}  // namespace fewstep
