#include "fewstep/psld/mixture.h"

#include <cmath>

#include "fewstep/core/check.h"

namespace fewstep {

namespace {
constexpr double kLog2Pi = 1.8378770664093454835606594728112;
}  // namespace

struct PsldMixture::Blocks {
  at::Tensor gu, gv;     // [B, K, D]: K_k⁻¹ (z − μ_k(t)) in component k's eigenbasis (x and m rows)
  at::Tensor log_joint;  // [B, K]: log w_k + log N(z; μ_k(t), K_k)
  at::Tensor eigvecs;    // [K, D, D] on z's device
};

PsldMixture::PsldMixture(std::shared_ptr<const GaussianMixture> data, PsldProcess process)
    : data_(std::move(data)), process_(std::move(process)) {
  FEWSTEP_CHECK_VALUE(data_ != nullptr, "PsldMixture: data mixture must not be null");
  auto [vals, vecs] = at::linalg_eigh(data_->covariances().to(at::kDouble));
  eigvals_ = vals.contiguous();
  eigvecs_ = vecs.contiguous();
}

PsldMixture::Blocks PsldMixture::blocks(const at::Tensor& z, double t) const {
  FEWSTEP_CHECK_VALUE(t >= process_.t_min() * (1 - 1e-12) && t <= process_.t_max() * (1 + 1e-12),
                      "PsldMixture: t must be in [t_min=", process_.t_min(), ", t_max=", process_.t_max(), "], got ", t);
  FEWSTEP_CHECK_VALUE(z.dim() == 2 && z.size(1) == 2 * dim(), "PsldMixture: z must be [B, ", 2 * dim(),
                      "] (x and m of a ", dim(), "-D mixture), got shape ", z.sizes());
  const auto dev = z.device();
  auto zd = z.to(at::kDouble);
  auto [x, m] = split_state(zd, "PsldMixture");
  const Mat2 p = process_.transition(process_.beta_integral(t));
  const Cov2 c = process_.kernel_covariance(t);
  auto mu = data_->means().to(dev, at::kDouble);  // [K, D]
  auto U = eigvecs_.to(dev);
  auto s = eigvals_.to(dev);
  // Residuals in each component's eigenbasis: u[b,k,e] = Σ_d (x_b − Φ₁₁ μ_k)_d U_k[d, e].
  auto u = at::einsum("bkd,kde->bke", {x.unsqueeze(1) - mu.unsqueeze(0) * p.a11, U});
  auto v = at::einsum("bkd,kde->bke", {m.unsqueeze(1) - mu.unsqueeze(0) * p.a21, U});
  auto a = s * (p.a11 * p.a11) + c.xx;  // [K, D]
  auto bb = s * (p.a11 * p.a21) + c.xm;
  auto cc = s * (p.a21 * p.a21) + c.mm;
  auto det = a * cc - bb * bb;
  auto gu = (cc * u - bb * v) / det;
  auto gv = (a * v - bb * u) / det;
  auto quad = (u * gu + v * gv).sum(-1);  // [B, K]
  auto logdet = det.log().sum(-1);        // [K]
  auto log_joint = data_->weights().to(dev).log() - 0.5 * quad - 0.5 * logdet - static_cast<double>(dim()) * kLog2Pi;
  return Blocks{gu, gv, log_joint, U};
}

at::Tensor PsldMixture::score(const at::Tensor& z, double t) const {
  auto b = blocks(z, t);
  auto r = at::softmax(b.log_joint, 1).unsqueeze(-1);  // [B, K, 1]
  auto sx = -at::einsum("bke,kde->bkd", {b.gu, b.eigvecs}).mul(r).sum(1);
  auto sm = -at::einsum("bke,kde->bkd", {b.gv, b.eigvecs}).mul(r).sum(1);
  return at::cat({sx, sm}, 1).to(z.scalar_type());
}

at::Tensor PsldMixture::log_prob(const at::Tensor& z, double t) const {
  return at::logsumexp(blocks(z, t).log_joint, 1).to(z.scalar_type());
}

at::Tensor PsldMixture::sample(int64_t n, double t, std::optional<at::Generator> generator) const {
  FEWSTEP_CHECK_VALUE(n > 0, "PsldMixture::sample: n must be positive, got ", n);
  auto x0 = data_->sample(n, generator);
  auto eps = at::randn({n, 2 * dim()}, generator, x0.options());
  return process_.perturb(x0, eps, t);
}

}  // namespace fewstep
