#include "fewstep/psld/splitting.h"

#include <cctype>
#include <tuple>
#include <utility>
#include <vector>

#include "rules.h"

namespace fewstep {

namespace {

struct Letter {
  char op;         // 'O', 'B' or 'A'
  double fraction; // of the step's b
};

std::vector<Letter> word(SplittingScheme scheme) {
  switch (scheme) {
    case SplittingScheme::OBA: return {{'O', 1}, {'B', 1}, {'A', 1}};
    case SplittingScheme::BAO: return {{'B', 1}, {'A', 1}, {'O', 1}};
    case SplittingScheme::OBAB: return {{'O', 1}, {'B', 0.5}, {'A', 1}, {'B', 0.5}};
    case SplittingScheme::BAOAB: return {{'B', 0.5}, {'A', 0.5}, {'O', 1}, {'A', 0.5}, {'B', 0.5}};
  }
  return {};
}

int evaluations(SplittingScheme scheme) {
  int n = 0;
  for (const auto& l : word(scheme)) n += l.op != 'O';
  return n;
}

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

double clock(const PsldProcess& p, double s, double t, const std::string& name) {
  FEWSTEP_CHECK_VALUE(t < s, "psld sampler '", name, "': t must be below s, got s=", s, ", t=", t);
  return p.beta_integral(s) - p.beta_integral(t);
}

}  // namespace

std::string to_string(SplittingScheme scheme) {
  switch (scheme) {
    case SplittingScheme::OBA: return "OBA";
    case SplittingScheme::BAO: return "BAO";
    case SplittingScheme::OBAB: return "OBAB";
    case SplittingScheme::BAOAB: return "BAOAB";
  }
  return "?";
}

PsldNaiveSplitting::PsldNaiveSplitting(SplittingScheme scheme, const Options& options) : scheme_(scheme) {
  const std::string name = "psld_n" + lower(to_string(scheme));
  traits_ = PsldSamplerTraits{name, 1, evaluations(scheme), 0, true,
                              "naive " + to_string(scheme) +
                                  " splitting of the PSLD reverse SDE, fresh score for every A and B "
                                  "(Pandey et al. 2024, arXiv 2402.07211 sec. 3)",
                              {}};
  options.check_known(traits_.options, "psld sampler '" + name + "'");
}

PsldStepResult PsldNaiveSplitting::step(PsldEvaluator& model, const at::Tensor& z, double s, double t,
                                        PsldState state, const PsldStepContext& ctx) const {
  const auto& p = model.process();
  const double b = clock(p, s, t, traits_.name);
  auto [x, m] = split_state(z, traits_.name.c_str());
  for (const auto& l : word(scheme_)) {
    const double bl = b * l.fraction;
    if (l.op == 'O') {
      std::tie(x, m) = psld_rules::ou_update(p, x, m, bl, 1.0, ctx, traits_.name.c_str());
      continue;
    }
    auto score = model(at::cat({x, m}, 1), s);
    auto [sx, sm] = split_state(score, traits_.name.c_str());
    if (l.op == 'B') {
      m = psld_rules::momentum_update(p, x, m, sm, bl);
    } else {
      x = psld_rules::position_update(p, x, m, sx, bl);
    }
  }
  state.steps_taken += 1;
  return {at::cat({x, m}, 1), std::move(state)};
}

PsldReducedSplitting::PsldReducedSplitting(SplittingScheme scheme, const Options& options) : scheme_(scheme) {
  FEWSTEP_CHECK_VALUE(scheme != SplittingScheme::BAOAB,
                      "PsldReducedSplitting: scheme must be OBA, BAO or OBAB (no reduced BAOAB), got BAOAB");
  const std::string name = "psld_r" + lower(to_string(scheme));
  std::vector<std::string> keys = {"reuse", "lambda_s"};
  if (scheme == SplittingScheme::OBAB) keys.push_back("end_time");
  options.check_known(keys, "psld sampler '" + name + "'");
  reuse_ = options.get_bool("reuse", true);
  lambda_s_ = options.get_double("lambda_s", 1.0);
  end_time_ = scheme == SplittingScheme::OBAB && options.get_bool("end_time", true);
  FEWSTEP_CHECK_VALUE(std::isfinite(lambda_s_) && lambda_s_ >= 0, "psld sampler '", name,
                      "': option lambda_s must be finite and >= 0, got ", lambda_s_);
  const int per_step = reuse_ ? 1 : evaluations(scheme);
  const int extra = reuse_ && scheme == SplittingScheme::OBAB ? 1 : 0;
  traits_ = PsldSamplerTraits{name, 1, per_step, extra, true,
                              "reduced " + to_string(scheme) +
                                  " splitting of the PSLD reverse SDE: score re-use, lambda_s, T-(t+h) "
                                  "conditioning (Pandey et al. 2024, arXiv 2402.07211 sec. 3)",
                              keys};
}

PsldStepResult PsldReducedSplitting::step(PsldEvaluator& model, const at::Tensor& z, double s, double t,
                                          PsldState state, const PsldStepContext& ctx) const {
  const auto& p = model.process();
  const char* name = traits_.name.c_str();
  const double b = clock(p, s, t, traits_.name);
  auto [x, m] = split_state(z, name);
  auto eval = [&](const at::Tensor& xx, const at::Tensor& mm, double time) {
    auto score = model(at::cat({xx, mm}, 1), time);
    return split_state(score, name);
  };
  switch (scheme_) {
    case SplittingScheme::OBA: {
      std::tie(x, m) = psld_rules::ou_update(p, x, m, b, lambda_s_, ctx, name);
      auto [sx, sm] = eval(x, m, s);
      m = psld_rules::momentum_update(p, x, m, sm, b);
      if (!reuse_) sx = eval(x, m, s).first;
      x = psld_rules::position_update(p, x, m, sx, b);
      break;
    }
    case SplittingScheme::BAO: {
      auto [sx, sm] = eval(x, m, s);
      m = psld_rules::momentum_update(p, x, m, sm, b);
      if (!reuse_) sx = eval(x, m, s).first;
      x = psld_rules::position_update(p, x, m, sx, b);
      std::tie(x, m) = psld_rules::ou_update(p, x, m, b, lambda_s_, ctx, name);
      break;
    }
    case SplittingScheme::OBAB: {
      std::tie(x, m) = psld_rules::ou_update(p, x, m, b, lambda_s_, ctx, name);
      at::Tensor sx, sm;
      if (reuse_ && state.score.defined()) {
        std::tie(sx, sm) = split_state(state.score, name);
      } else {
        std::tie(sx, sm) = eval(x, m, s);
      }
      m = psld_rules::momentum_update(p, x, m, sm, 0.5 * b);
      if (!reuse_) sx = eval(x, m, s).first;
      x = psld_rules::position_update(p, x, m, sx, b);
      auto last = model(at::cat({x, m}, 1), end_time_ ? t : s);
      m = psld_rules::momentum_update(p, x, m, split_state(last, name).second, 0.5 * b);
      if (reuse_) state.score = last;
      break;
    }
    case SplittingScheme::BAOAB: break;  // rejected by the constructor
  }
  state.steps_taken += 1;
  return {at::cat({x, m}, 1), std::move(state)};
}

}  // namespace fewstep
