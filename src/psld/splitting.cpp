#include "fewstep/psld/splitting.h"

#include <cctype>
#include <tuple>
#include <utility>
#include <vector>

#include "rules.h"

namespace fewstep {

namespace {

struct Letter {
  char op;          // 'O', 'B' or 'A'
  double fraction;  // of the step's b
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

int evaluations(SplittingScheme scheme, const ScorePlacement& placement) {
  int n = 0;
  for (const auto& l : word(scheme)) n += placement.uses_score(l.op);
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

std::string placement_summary(const ScorePlacement& pl) {
  return std::string("s_x in ") + (pl.position_in_o ? "O" : "A") + ", s_m in " + (pl.momentum_in_o ? "O" : "B");
}

// Applies one piece over bl with the score (sx, sm); the pieces take only the score terms they hold.
void apply(const PsldProcess& p, const ScorePlacement& pl, char op, double bl, at::Tensor& x, at::Tensor& m,
           const at::Tensor& sx, const at::Tensor& sm, double lambda_s, const PsldStepContext& ctx, const char* name) {
  const at::Tensor none;
  if (op == 'O') {
    std::tie(x, m) = psld_rules::ou_update(p, x, m, pl.position_in_o ? sx : none, pl.momentum_in_o ? sm : none, bl,
                                           lambda_s, ctx, name);
  } else if (op == 'B') {
    m = psld_rules::momentum_update(p, x, m, pl.momentum_in_o ? none : sm, bl);
  } else {
    x = psld_rules::position_update(p, x, m, pl.position_in_o ? none : sx, bl);
  }
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

ScorePlacement ScorePlacement::from_options(const Options& options, const std::string& owner) {
  ScorePlacement pl;
  const std::string sx = options.get_string("score_x", pl.position_in_o ? "O" : "A");
  const std::string sm = options.get_string("score_m", pl.momentum_in_o ? "O" : "B");
  FEWSTEP_CHECK_VALUE(sx == "A" || sx == "O", owner, ": option score_x (the piece holding the position score) must be ",
                      "'A' or 'O', got '", sx, "'");
  FEWSTEP_CHECK_VALUE(sm == "B" || sm == "O", owner, ": option score_m (the piece holding the momentum score) must be ",
                      "'B' or 'O', got '", sm, "'");
  pl.position_in_o = sx == "O";
  pl.momentum_in_o = sm == "O";
  return pl;
}

bool ScorePlacement::uses_score(char piece) const {
  if (piece == 'A') return !position_in_o;
  if (piece == 'B') return !momentum_in_o;
  return position_in_o || momentum_in_o;
}

PsldNaiveSplitting::PsldNaiveSplitting(SplittingScheme scheme, const Options& options) : scheme_(scheme) {
  const std::string name = "psld_n" + lower(to_string(scheme));
  const std::vector<std::string> keys = {"score_x", "score_m"};
  options.check_known(keys, "psld sampler '" + name + "'");
  placement_ = ScorePlacement::from_options(options, "psld sampler '" + name + "'");
  traits_ = PsldSamplerTraits{name, 1, evaluations(scheme, placement_), 0, true,
                              "naive " + to_string(scheme) + " splitting of the PSLD reverse SDE (" +
                                  placement_summary(placement_) +
                                  "), fresh score for every piece holding one (Pandey et al. 2024, arXiv "
                                  "2402.07211 sec. 3)",
                              keys};
}

PsldStepResult PsldNaiveSplitting::step(PsldEvaluator& model, const at::Tensor& z, double s, double t,
                                        PsldState state, const PsldStepContext& ctx) const {
  const auto& p = model.process();
  const char* name = traits_.name.c_str();
  const double b = clock(p, s, t, traits_.name);
  auto [x, m] = split_state(z, name);
  for (const auto& l : word(scheme_)) {
    at::Tensor sx, sm;
    if (placement_.uses_score(l.op)) std::tie(sx, sm) = split_state(model(at::cat({x, m}, 1), s), name);
    apply(p, placement_, l.op, b * l.fraction, x, m, sx, sm, 1.0, ctx, name);
  }
  state.steps_taken += 1;
  return {at::cat({x, m}, 1), std::move(state)};
}

PsldReducedSplitting::PsldReducedSplitting(SplittingScheme scheme, const Options& options) : scheme_(scheme) {
  FEWSTEP_CHECK_VALUE(scheme != SplittingScheme::BAOAB,
                      "PsldReducedSplitting: scheme must be OBA, BAO or OBAB (no reduced BAOAB), got BAOAB");
  const std::string name = "psld_r" + lower(to_string(scheme));
  const std::string owner = "psld sampler '" + name + "'";
  std::vector<std::string> keys = {"reuse", "lambda_s", "score_x", "score_m"};
  if (scheme == SplittingScheme::OBAB) keys.push_back("end_time");
  options.check_known(keys, owner);
  placement_ = ScorePlacement::from_options(options, owner);
  reuse_ = options.get_bool("reuse", true);
  lambda_s_ = options.get_double("lambda_s", 1.0);
  FEWSTEP_CHECK_VALUE(std::isfinite(lambda_s_) && lambda_s_ >= 0, owner,
                      ": option lambda_s must be finite and >= 0, got ", lambda_s_);
  // The carried, end-time evaluation exists only when the step's last piece holds a score.
  carry_ = placement_.uses_score(word(scheme).back().op) && scheme == SplittingScheme::OBAB;
  FEWSTEP_CHECK_VALUE(carry_ || !options.has("end_time"), owner,
                      ": option end_time conditions the evaluation for the final B on the step's end time; with ",
                      placement_summary(placement_), " the final B holds no score, so end_time does nothing");
  end_time_ = carry_ && options.get_bool("end_time", true);
  const int per_step = reuse_ ? 1 : evaluations(scheme, placement_);
  const int extra = reuse_ && carry_ ? 1 : 0;
  traits_ = PsldSamplerTraits{name, 1, per_step, extra, true,
                              "reduced " + to_string(scheme) + " splitting of the PSLD reverse SDE (" +
                                  placement_summary(placement_) +
                                  "): score re-use, lambda_s, T-(t+h) conditioning (Pandey et al. 2024, arXiv "
                                  "2402.07211 sec. 3)",
                              keys};
}

PsldStepResult PsldReducedSplitting::step(PsldEvaluator& model, const at::Tensor& z, double s, double t,
                                          PsldState state, const PsldStepContext& ctx) const {
  const auto& p = model.process();
  const char* name = traits_.name.c_str();
  const double b = clock(p, s, t, traits_.name);
  auto [x, m] = split_state(z, name);
  const auto letters = word(scheme_);
  // The score serving this step's pieces: carried from the previous step when the last piece's
  // evaluation is carried on, else evaluated by the first piece that needs one.
  at::Tensor score = reuse_ && carry_ ? state.score : at::Tensor();
  for (size_t k = 0; k < letters.size(); ++k) {
    const auto& l = letters[k];
    at::Tensor sx, sm;
    if (placement_.uses_score(l.op)) {
      const bool last = carry_ && k + 1 == letters.size();
      if (last) {
        score = model(at::cat({x, m}, 1), end_time_ ? t : s);
        if (reuse_) state.score = score;
      } else if (!reuse_ || !score.defined()) {
        score = model(at::cat({x, m}, 1), s);
      }
      std::tie(sx, sm) = split_state(score, name);
    }
    apply(p, placement_, l.op, b * l.fraction, x, m, sx, sm, lambda_s_, ctx, name);
  }
  state.steps_taken += 1;
  return {at::cat({x, m}, 1), std::move(state)};
}

}  // namespace fewstep
