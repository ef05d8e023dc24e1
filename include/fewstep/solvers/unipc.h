/// @file solvers/unipc.h
/// @brief UniPC (Zhao et al. 2023, arXiv 2302.04867, Sec. 3): multistep UniP-p predictor and UniC-p
///        corrector in the B(h) form (B1(h) = h, B2(h) = e^h − 1), data or noise prediction.
///
/// Data-prediction form, from s to t with h = λ_t − λ_s, model outputs m = x̂_0, history
/// points s_k with r_k = (λ_{s_k} − λ_s)/h and D_k = (m_{s_k} − m_s)/r_k:
///   UniP-p:  x̃_t = (σ_t/σ_s) x_s − α_t (e^{−h} − 1) m_s − α_t B(h) Σ_{k<p} a_k D_k
///   UniC-p:  x_t^c = (σ_t/σ_s) x_s − α_t (e^{−h} − 1) m_s − α_t B(h) (Σ_{k<p} a^c_k D_k + a^c_p (m(x̃_t, t) − m_s))
/// with a = R_p(h)^{−1} g_p(h)/B(h), R rows r^{i−1}, g_i = i!·(−h)φ_{i+1}(−h), B(h) = −h ("bh1") or
/// e^{−h} − 1 ("bh2"). Noise prediction: m = ε̂, −h → h, σ ↔ α in the linear part. As in the official
/// code, UniP-2 and UniC-1 use a = 1/2 (the h → 0 limit of the solved value, same order).
///
/// The corrector costs no evaluation: step i evaluates m at its start point x̃_{t_i} (needed for its
/// own predictor anyway), first corrects x̃_{t_i} → x^c_{t_i} from the previous step's start point,
/// which it keeps in SolverState::own, and then predicts from x^c_{t_i}. Hence the x a step returns is
/// the predictor value x̃; the corrected x^c_{t_i} comes back as StepResult::revised_start of step i,
/// and the driver reports it in the trajectory and the callback of step i − 1 (docs/sampling.md). The
/// last step is never corrected (nothing evaluates after it).
/// Warm-up steps use the orders the history allows (1, 2, ...).
///
/// Options: order (1–3, default 2: the official default, and on the bench mixture order 2 + bh2
/// is the most accurate at NFE 10 while order 3 is worse at NFE 5–10), variant ("bh1" | "bh2",
/// default "bh2"), predict_x0 (default true), use_corrector (default true), lower_order_final
/// (default true: step i of N uses order min(order, N − i), the official rule, on every grid).
/// Declared order: `order` + 1 with the corrector (UniC-p raises UniP-p's order p by one, Sec. 3;
/// confirmed by the fitted slopes in tests/cpp/test_unipc_deis.cpp), `order` without.
/// lower_order_final lowers the last steps' order; in data prediction their error is scaled by
/// dx̂_0/dλ, tiny at the end of the flow, so the observed order stays order + 1 (fitted 2.9–3.0
/// with it on, on the test mixture).
#pragma once

#include "fewstep/solvers/stepper.h"

namespace fewstep {

class UniPCStepper final : public Stepper {
 public:
  explicit UniPCStepper(const Options& options = {});
  const StepperTraits& traits() const override { return traits_; }
  StepResult step(ModelEvaluator& model, const at::Tensor& x, double s, double t, SolverState state,
                  const StepContext& ctx) const override;

 private:
  /// One UniP-p (corrector_model undefined) or UniC-p update from (x_s, m_s) at s to t, with
  /// `older` = the p − 1 history entries before s, most recent first.
  at::Tensor update(const NoiseSchedule& schedule, const at::Tensor& x, const at::Tensor& m_s, double s, double t,
                    const std::vector<const HistoryEntry*>& older, int64_t p,
                    const at::Tensor* corrector_model) const;
  const at::Tensor& model_output(const HistoryEntry& e) const { return predict_x0_ ? e.x0 : e.eps; }

  int64_t order_;
  bool bh2_;
  bool predict_x0_;
  bool lower_order_final_;
  bool use_corrector_;
  StepperTraits traits_;
};

}  // namespace fewstep
